"""Advisory locks on folders (an flock on a file inside): one sweep per sweep folder, one process per run."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mnistlab.errors import MnistlabError


@contextmanager
def folder_lock(path: Path, busy: str) -> Iterator[int | None]:
    """Hold an exclusive flock on `path` (created if needed) for the block; `busy` is the error when held.

    The lock belongs to the open file: it lasts while this process, or a child it handed the fd
    to, is alive. Yields the fd (None where the platform has no fcntl: no lock there).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield None
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only folder (a copied or mounted run): one line, not a traceback
        raise MnistlabError(f"cannot lock {path}: {exc.strerror or exc} (the folder must be writable)") from None
    for attempt in range(10):  # a few tries: `folder_locked` takes a shared lock for an instant
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == 9:
                os.close(fd)
                raise MnistlabError(busy) from None
            time.sleep(0.02)
    try:
        yield fd
    finally:
        os.close(fd)


def folder_locked(path: Path) -> bool | None:
    """Whether a process holds the flock on `path` now; None where that cannot be told (no fcntl, no file)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at once, by the close
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
