"""What the engine tells the user while it trains: bars, epoch lines, or JSON lines.

A bar fits where it is shown (`progress_bar`): on a terminal, tqdm's bar on stderr, redrawn in
place; in a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab), whose streams are never
terminals, tqdm's widget bar when ipywidgets is installed (and the frontend is no Qt Console), else a text bar on stdout that a
notebook's output area redraws in place (carriage returns only: no escape codes, no line per
update, refreshed at most once a second); elsewhere (a pipe, a log file) none.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

# The kernel's text bar: a fixed width (a notebook has no terminal size) and few redraws, each one a
# message to the browser.
_NOTEBOOK_COLUMNS = 100
_NOTEBOOK_REFRESH_SECONDS = 1.0


def in_notebook() -> bool:
    """True inside a Jupyter kernel: IPython is running with a kernel (not a terminal IPython, not a script).

    `isatty` cannot tell: a kernel's streams are never terminals, and neither is a pipe.
    """
    ipython = sys.modules.get("IPython")  # never imported here: a kernel has imported it long before
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - a broken IPython is no kernel to draw for
        return False
    return getattr(shell, "kernel", None) is not None


def _have_widgets() -> bool:
    """ipywidgets is importable, so tqdm's notebook bar can draw (it warns and fails without), and the
    frontend draws widgets: not Qt Console or Spyder (their kernels are kernels too; tqdm checks the same)."""
    if any(key == "QT_API" or key.startswith("SPYDER") for key in os.environ):
        return False
    try:
        from tqdm.notebook import IProgress
    except ImportError:
        return False
    return IProgress is not None


def progress_bar(total: int | None = None, desc: str = "", *, show: bool | None = None,
                 iterable: Iterable[Any] | None = None, **options: Any) -> Any:
    """A tqdm bar (closed by the caller) that shows correctly where the process runs; see the module docstring.

    Args:
        show: None: on a terminal or in a notebook only; True: also into a pipe (stderr); False: never.
        **options: more tqdm options (unit, unit_scale, ...).
    """
    from tqdm import std

    if show is False:
        return std.tqdm(iterable, total=total, desc=desc, disable=True)
    if in_notebook():
        if _have_widgets():
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(iterable, total=total, desc=desc, leave=False,
                                 mininterval=_NOTEBOOK_REFRESH_SECONDS, **options)
        # position=0: never the cursor-up codes tqdm uses to stack bars.
        return std.tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stdout, position=0,
                        ncols=_NOTEBOOK_COLUMNS, mininterval=_NOTEBOOK_REFRESH_SECONDS, **options)
    return std.tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr,
                    disable=None if show is None else False, dynamic_ncols=True, **options)


class Reporter:
    """Prints progress in one of three modes.

    bar:   a bar per epoch (`progress_bar`: on a terminal or in a notebook) and one summary line per epoch on stdout.
    quiet: only warnings and the final result.
    jsonl: one JSON object per event on stdout (`{"event": "epoch", ...}`), for scripts.
    """

    def __init__(self, mode: str = "bar", stream: TextIO | None = None, enabled: bool = True) -> None:
        self.mode = mode
        self.stream = stream or sys.stdout
        self.enabled = enabled  # False on non-zero DDP ranks

    def bar(self, total: int, desc: str) -> Any:
        """An epoch's bar (`progress_bar`); a disabled one in quiet/jsonl mode or when not enabled."""
        return progress_bar(total, desc, show=None if (self.mode == "bar" and self.enabled) else False)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        if self.mode == "jsonl":
            self._json({"event": "info", "message": message})
        elif self.mode == "bar":
            print(message, file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        if not self.enabled:
            return
        if self.mode == "jsonl":
            self._json({"event": "warning", "message": message})
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def epoch(self, row: dict[str, Any], total_epochs: float) -> None:
        if not self.enabled:
            return
        if self.mode == "jsonl":
            self._json({"event": "epoch", **row})
        elif self.mode == "bar":
            valid = (
                f"valid loss {row['valid_loss']:.4f} acc {row['valid_accuracy']:.4f}"
                if row.get("valid_loss") is not None
                else "no valid split"
            )
            # A fractional total (0.8 epochs) still runs whole-numbered epochs, the last one partial.
            last = math.ceil(total_epochs)
            width = len(str(last))
            print(
                f"epoch {row['epoch']:>{width}}/{last}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_accuracy']:.4f}  {valid}  lr {row['lr']:.2e}  "
                f"{row['train_seconds']:.2f}s train / {row['epoch_seconds']:.2f}s total",
                file=self.stream,
                flush=True,
            )

    def result(self, summary: dict[str, Any], run_path: str) -> None:
        if not self.enabled:
            return
        if self.mode == "jsonl":
            self._json({"event": "result", "run": run_path, **summary})
            return
        parts = [f"test accuracy {summary['accuracy']:.4f}", f"macro F1 {summary['f1_macro']:.4f}"]
        if summary.get("auc_macro") is not None:
            parts.append(f"AUC {summary['auc_macro']:.4f}")
        print(
            "  ".join(parts) + f"  ({summary['epochs_run']} epochs, {summary['train_seconds']:.2f}s training, "
            f"stop: {summary['stop_reason']})",
            file=self.stream,
        )
        print(f"run folder: {run_path}", file=self.stream, flush=True)

    def _json(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj, default=str), file=self.stream, flush=True)
