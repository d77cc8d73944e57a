"""The callbacks every run has: early stopping (and best-epoch tracking), checkpoints, metrics.csv, summary.json."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError
from mnistlab.runs import run_summary, write_json, write_metrics_csv
from mnistlab.training.callbacks.base import Callback
from mnistlab.training.checkpoint import link_or_copy, load_checkpoint, save_training_checkpoint
from mnistlab.training.early_stopping import EarlyStopping
from mnistlab.training.state import FitState

# best.pt as it was before a partial (fractional) last epoch became the best: if that epoch is
# later completed and is no longer the best, best.pt goes back to this.
BEST_BEFORE_PARTIAL = "best-before-partial.pt"


def early_stop_reason(patience: int, early: EarlyStopping, monitor: str = "valid_loss") -> str:
    if monitor == "valid_accuracy":  # the tracker minimises, so it holds the accuracy negated
        best = f"best {100 * -early.best:.2f}%"
    else:
        best = f"best {early.best:.4f}"
    return (
        f"early stopping: {monitor.replace('_', ' ')} did not improve for {patience} epochs "
        f"({best} at epoch {early.best_epoch})"
    )


def monitored_value(row: dict[str, Any], monitor: str) -> float:
    """What the best epoch is picked by, as a value to minimise: the valid loss, or the valid accuracy
    negated (`--monitor`); without a validation split, the same of the training epoch."""
    split = "valid" if row.get("valid_loss") is not None else "train"
    if monitor == "valid_accuracy":
        return -float(row[f"{split}_accuracy"])
    return float(row[f"{split}_loss"])


class EarlyStop(Callback):
    """Tracks the best epoch by `monitor` (valid loss, or valid accuracy; on the training epoch without a
    validation split) and stops after `patience` epochs without a better one.

    By accuracy, a tie is no improvement: of equally accurate epochs the first stays the best.
    """

    state_key = "early_stopping"

    def __init__(self, patience: int, monitor: str = "valid_loss") -> None:
        self.tracker = EarlyStopping(patience=patience)
        self.monitor = monitor
        self.before: dict[str, Any] | None = None  # the tracker before a partial epoch's update

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        state.best_epoch, state.best_value = self.tracker.best_epoch, self.tracker.best

    def on_validation_end(self, trainer: Any, state: FitState) -> None:
        row = state.row
        if state.partial_epoch == state.epoch and self.before is not None:
            # The epoch was counted once already, half-done: count it again as if for the first time.
            self.tracker.load_state_dict(self.before)
        partial = row.get("steps", 0) < trainer.budget.steps_per_epoch
        self.before = self.tracker.state_dict() if partial else None
        state.improved = self.tracker.update(monitored_value(row, self.monitor), state.epoch)
        state.best_epoch, state.best_value = self.tracker.best_epoch, self.tracker.best
        if self.tracker.should_stop:
            state.stop(early_stop_reason(self.tracker.patience, self.tracker, self.monitor))

    def state_dict(self) -> dict[str, Any]:
        return {**self.tracker.state_dict(), **({"before": self.before} if self.before else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.before = state.pop("before", None)
        self.tracker.load_state_dict(state)


class Checkpoint(Callback):
    """checkpoints/last.pt after epoch 0 (a new run) and every epoch; best.pt is the best epoch's.

    Runs on every rank: the payload gathers every rank's random generator state (a collective).
    """

    main_only = False

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        if not state.resumed:
            self._save(trainer, state, best=False)  # even a run killed in its first epoch can resume

    def on_epoch_end(self, trainer: Any, state: FitState) -> None:
        folder = trainer.path / "checkpoints"
        partial = state.row.get("steps", 0) < trainer.budget.steps_per_epoch
        before = folder / BEST_BEFORE_PARTIAL
        main = trainer.strategy.is_main
        if main and partial and state.improved and (folder / "best.pt").is_file() and not before.is_file():
            link_or_copy(folder / "best.pt", before)  # the best before this epoch, kept until the epoch is whole
        self._save(trainer, state, best=state.improved)
        if not main or not before.is_file():
            return
        # This epoch was once the best while partial: best.pt is either it or the best from before it.
        if not state.improved and int(load_checkpoint(before).get("epoch", -1)) == state.best_epoch:
            link_or_copy(before, folder / "best.pt")
        if not partial:
            os.unlink(before)

    def _save(self, trainer: Any, state: FitState, best: bool) -> None:
        payload = trainer.checkpoint_payload(state)  # a collective: every rank calls it
        if trainer.strategy.is_main:
            trainer.check_folder()
            self.save(trainer.path / "checkpoints", payload, best)
        state.checkpointed_epoch = state.epoch

    def save(self, folder: Path, payload: dict[str, Any], best: bool) -> None:
        """Write last.pt, then make best.pt the same file when `best` (last.pt is complete first)."""
        save_training_checkpoint(folder, payload, best)


class MetricsCsv(Callback):
    """metrics.csv, rewritten after each epoch's checkpoint (so it is never ahead of last.pt)."""

    def on_epoch_end(self, trainer: Any, state: FitState) -> None:
        write_metrics_csv(trainer.path / "metrics.csv", state.history)


class Summary(Callback):
    """summary.json: "running" from the start, then how the run ended, with the test metrics."""

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        self._write(trainer, state, "running", "running")

    def on_fit_end(self, trainer: Any, state: FitState) -> None:
        extra = {"split": "test", "checkpoint": state.checkpoint_scored, **(state.test or {})}
        state.summary = self._write(trainer, state, state.status, state.stop_reason, extra)

    def on_exception(self, trainer: Any, state: FitState) -> None:
        if state.summary is not None or not (trainer.path / "config.yaml").is_file():
            return  # completed already (the report was interrupted), or the run folder is gone
        # The epochs that reached a checkpoint: a row whose checkpoint failed to write is not kept.
        state.history = [r for r in state.history if r["epoch"] <= state.checkpointed_epoch]
        try:
            self._write(trainer, state, state.status, state.stop_reason)
        except (MnistlabError, OSError):
            pass  # e.g. the disk is still full; the error that ended the run is what matters

    @staticmethod
    def _write(trainer: Any, state: FitState, status: str, reason: str | None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        best_loss = state.best_value
        if trainer.cfg.monitor == "valid_accuracy":  # best_value is an accuracy
            # The loss the valid_loss monitor would hold for that epoch: without a validation split, its train loss.
            best_loss = next((monitored_value(r, "valid_loss") for r in state.history
                              if r["epoch"] == state.best_epoch), None)
        summary = run_summary(
            {"name": trainer.path.name, **trainer.prep.summary}, status=status, stop_reason=str(reason),
            history=state.history, best_epoch=state.best_epoch,
            best_valid_loss=math.inf if best_loss is None else best_loss,
            train_seconds=state.train_seconds, total_seconds=state.total_seconds, extra=extra,
        )
        write_json(trainer.path / "summary.json", summary)
        return summary
