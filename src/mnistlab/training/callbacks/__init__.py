"""Callbacks: the base class, and the built-in behaviours of every run (each a callback itself)."""

from mnistlab.training.callbacks.base import HOOKS, Callback, CallbackList
from mnistlab.training.callbacks.core import Checkpoint, EarlyStop, MetricsCsv, Summary
from mnistlab.training.callbacks.output import Progress, Report, TensorBoard, require_tensorboard

__all__ = [
    "HOOKS", "Callback", "CallbackList", "Checkpoint", "EarlyStop", "MetricsCsv", "Progress", "Report",
    "Summary", "TensorBoard", "default_callbacks", "require_tensorboard",
]


def default_callbacks(patience: int, *, plots: bool, tensorboard: bool) -> list[Callback]:
    """The built-ins in their order: decide (early stopping), then write (checkpoint before metrics.csv),
    then show."""
    callbacks: list[Callback] = [EarlyStop(patience), Checkpoint(), MetricsCsv(), Summary(), Progress()]
    if tensorboard:
        callbacks.append(TensorBoard())
    if plots:
        callbacks.append(Report())
    return callbacks
