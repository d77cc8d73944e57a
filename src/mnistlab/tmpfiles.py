"""Temporary files beside their target, created with the permissions of an ordinary file.

`tempfile.mkstemp` always creates mode 0600: a data or runs folder shared between users would
then hold files only their writer can read. `create_temp` opens with mode 0666 and lets the
kernel apply the umask, as `open()` does: 0644 under umask 022, 0600 under 077.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_ATTEMPTS = 100


def create_temp(folder: str | os.PathLike[str], prefix: str, suffix: str) -> tuple[int, Path]:
    """Create a new empty file `folder/PREFIX<random>SUFFIX` for writing: (open fd, path).

    Like mkstemp (exclusive creation, a fresh random name on a clash), but the mode follows the umask.

    Raises:
        OSError: the folder is missing or not writable (FileExistsError after 100 clashes).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        path = Path(folder) / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder} after {_ATTEMPTS} tries")
