"""Callbacks: the base class, and the built-in behaviours of every run (each a callback itself)."""

from mnistlab.training.callbacks.base import HOOKS, Callback, CallbackList
from mnistlab.training.callbacks.core import Checkpoint, EarlyStop, MetricsCsv, Summary
from mnistlab.training.callbacks.ema import EMA
from mnistlab.training.callbacks.output import Progress, Report, TensorBoard, require_tensorboard
from mnistlab.training.callbacks.tracker import MlflowTracker

__all__ = [
    "EMA", "HOOKS", "Callback", "CallbackList", "Checkpoint", "EarlyStop", "MetricsCsv", "MlflowTracker",
    "Progress", "Report", "Summary", "TensorBoard", "default_callbacks", "require_tensorboard",
]


def default_callbacks(patience: int, *, plots: bool, tensorboard: bool, mlflow: str | None = None,
                      mlflow_checkpoints: bool = False, ema: float = 0.0,
                      monitor: str = "valid_loss") -> list[Callback]:
    """The built-ins in their order: the weight average (--ema, first: it is what validates, and epoch 0's
    checkpoint holds it), decide (early stopping), then write (checkpoint before metrics.csv), then show;
    MLflow last, so that it uploads the finished plots and report."""
    callbacks: list[Callback] = [EMA(ema)] if ema else []
    callbacks += [EarlyStop(patience, monitor), Checkpoint(), MetricsCsv(), Summary(), Progress()]
    if tensorboard:
        callbacks.append(TensorBoard())
    if plots:
        callbacks.append(Report())
    if mlflow:
        callbacks.append(MlflowTracker(mlflow, checkpoints=mlflow_checkpoints))
    return callbacks
