"""Callbacks: the base class, and the built-in behaviours of every run (each a callback itself)."""

from mnistlab.training.callbacks.base import HOOKS, Callback, CallbackList
from mnistlab.training.callbacks.core import Checkpoint, EarlyStop, MetricsCsv, Summary
from mnistlab.training.callbacks.ema import EMA
from mnistlab.training.callbacks.output import Progress, Report, TensorBoard, require_tensorboard

__all__ = [
    "EMA", "HOOKS", "Callback", "CallbackList", "Checkpoint", "EarlyStop", "MetricsCsv", "Progress", "Report",
    "Summary", "TensorBoard", "default_callbacks", "require_tensorboard",
]


def default_callbacks(patience: int, *, plots: bool, tensorboard: bool, ema: float = 0.0) -> list[Callback]:
    """The built-ins in their order: the weight average (--ema, first: it is what validates, and epoch 0's
    checkpoint holds it), decide (early stopping), then write (checkpoint before metrics.csv), then show."""
    callbacks: list[Callback] = [EMA(ema)] if ema else []
    callbacks += [EarlyStop(patience), Checkpoint(), MetricsCsv(), Summary(), Progress()]
    if tensorboard:
        callbacks.append(TensorBoard())
    if plots:
        callbacks.append(Report())
    return callbacks
