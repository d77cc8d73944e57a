"""SIGTERM handled like Ctrl-C: long commands (training, predicting into a file) clean up and exit 143."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from mnistlab.errors import Terminated


@contextlib.contextmanager
def sigterm_as_interrupt(enabled: bool = True) -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt; the CLI exits 143) inside this block, in the main thread.

    Not under torchrun: its launcher stops the other ranks with SIGTERM when one fails, and a rank
    blocked in a collective would never run a Python handler. A handler someone else installed is
    left alone.
    """
    if (not enabled or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
