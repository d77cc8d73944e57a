"""What a run knows while it trains (FitState), and the checkpoint entries every run writes."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import mnistlab
from mnistlab.training.hardware import rng_state


@dataclasses.dataclass
class FitState:
    """The run's progress, shared by the trainer and its callbacks.

    Callbacks read it and may call `stop(reason)`; the trainer owns the rest.
    """

    epoch: int = 0  # the epoch training (or last finished, before the first)
    row: dict[str, Any] | None = None  # the epoch's metrics.csv row, valid metrics included
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    global_step: int = 0  # optimizer steps taken in the whole run
    checkpointed_epoch: int = 0  # the epoch of the last checkpoint written
    train_seconds: float = 0.0
    seconds_before: float = 0.0  # wall time of the sessions before a resume
    started: float = dataclasses.field(default_factory=time.perf_counter)
    resumed: bool = False
    start_epoch: int = 1
    partial_epoch: int | None = None  # an epoch a fractional run left half-done, continued now
    best_epoch: int = 0
    best_value: float = math.inf
    improved: bool = False  # this epoch is the best so far (its checkpoint becomes best.pt)
    stop_reason: str | None = None  # set by stop(); the loop ends after the epoch
    status: str = "running"  # running, completed, failed, interrupted
    phase: str = "train"  # train, then test
    test: dict[str, Any] | None = None  # test metrics, once scored
    test_logits: Any = None
    checkpoint_scored: str | None = None  # "best" or "last"
    summary: dict[str, Any] | None = None
    error: BaseException | None = None

    def stop(self, reason: str) -> None:
        """End the run after this epoch, with `reason` as summary.json's stop_reason."""
        if self.stop_reason is None:
            self.stop_reason = str(reason)

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole run so far, over every session (resumes included)."""
        return self.seconds_before + (time.perf_counter() - self.started)


def training_state(model: Any, optimizer: Any, scheduler: Any, state: FitState, steps_per_epoch: int) -> dict[str, Any]:
    """The checkpoint entries that resume reads back (plain values and tensors only)."""
    return {
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "epoch": state.epoch,
        "history": state.history,
        "train_seconds": state.train_seconds,
        "total_seconds": state.total_seconds,
        "global_step": state.global_step,
        "steps_per_epoch": steps_per_epoch,
        "mnistlab_version": mnistlab.__version__,
    }
