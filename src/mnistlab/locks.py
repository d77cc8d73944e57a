"""Advisory locks on folders (an flock on a file inside): one sweep per sweep folder, one process per run."""

from __future__ import annotations

import os
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
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MnistlabError(busy) from None
    try:
        yield fd
    finally:
        os.close(fd)
