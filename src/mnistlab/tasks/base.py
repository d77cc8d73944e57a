"""What a task gives the trainer: everything that differs between image runs, text runs and a user's model.

The trainer owns the loop, the run folder, checkpoints, early stopping and the test pass; a
task owns the data, the model, how its inputs become logits, and the files and report that
only its kind of run has.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch
from torch import nn

from mnistlab.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from mnistlab.runs import Run
    from mnistlab.training.progress import Reporter
    from mnistlab.training.state import FitState
    from mnistlab.training.strategy import SingleProcess


@dataclasses.dataclass
class Prepared:
    """A task's data and model, ready to train.

    `valid` and `test` are whatever `predict` takes (image tensors, token lists); they are
    sliced with `items[shard]` under DDP, so they must support len() and slicing.
    """

    model: nn.Module  # the plain module: checkpoints and evaluation use it
    step_model: nn.Module  # what takes the steps: the model, compiled and/or wrapped by DDP
    batches: Any  # set_epoch(e); iterates (x, y); len() = batches per epoch on this rank
    steps_per_epoch: int  # the same on every rank
    autocast: Any  # a context manager around the forward pass
    classes: list[str]
    valid: Any
    valid_labels: torch.Tensor
    test: Any
    test_labels: torch.Tensor
    predict: Callable[[nn.Module, Any], torch.Tensor]  # (model, items) -> float logits [N, K] on the CPU
    model_spec: dict[str, Any]  # the checkpoint's "model" entry
    data_spec: dict[str, Any]  # the checkpoint's "data" entry
    summary: dict[str, Any]  # summary.json's fields about the model and data
    environment: dict[str, Any]  # environment.json
    describe: str  # the "training ..." line, without its run folder
    no_test: str = "no test split"  # said instead of test metrics when there is no test split
    class_counts: list[int] | None = None  # training images (texts) per class: class weights, the imbalance warning
    test_predict: Callable[[nn.Module, Any], torch.Tensor] | None = None  # the test pass's, if not `predict` (TTA)


class Task(Protocol):
    """The part of a run that depends on its kind (see mnistlab.tasks.image and mnistlab.tasks.text)."""

    def resume_line(self, path: Path) -> str:
        """The command (or call) that continues the run in `path`, as printed when a run is interrupted."""

    def prepare(self, cfg: TrainConfig, strategy: "SingleProcess", reporter: "Reporter",
                resume_from: "Run | None") -> Prepared:
        """Load the data and build the model (seeded by the trainer beforehand)."""

    def default_name(self, cfg: TrainConfig) -> str:
        """The run folder's name when the user gives none."""

    def config_record(self, cfg: TrainConfig) -> dict[str, Any]:
        """config.yaml's content (and the checkpoint's "config"): what reruns this run."""

    def write_files(self, path: Path) -> None:
        """Files only this kind of run has (e.g. a text run's vocab.json)."""

    def rebuild(self, ckpt: dict[str, Any], source: str, device: torch.device) -> nn.Module:
        """The model of a checkpoint on `device`, in eval mode (for the test pass)."""

    def report(self, run: "Run", state: "FitState") -> None:
        """Plots and report.md/html at the end of the run."""
