"""What the engine tells the user while it trains: bars, epoch lines, or JSON lines."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO


class Reporter:
    """Prints progress in one of three modes.

    bar:   a tqdm bar per epoch on stderr (only on a terminal) and one summary line per epoch on stdout.
    quiet: only warnings and the final result.
    jsonl: one JSON object per event on stdout (`{"event": "epoch", ...}`), for scripts.
    """

    def __init__(self, mode: str = "bar", stream: TextIO | None = None, enabled: bool = True) -> None:
        self.mode = mode
        self.stream = stream or sys.stdout
        self.enabled = enabled  # False on non-zero DDP ranks

    def bar(self, total: int, desc: str) -> Any:
        """A tqdm bar (disabled off a terminal, in quiet/jsonl mode, or when not enabled)."""
        from tqdm.auto import tqdm

        disable = None if (self.mode == "bar" and self.enabled) else True
        return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, disable=disable, dynamic_ncols=True)

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
