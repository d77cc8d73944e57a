"""One epoch of optimisation steps, and how a run's (possibly fractional) epochs become steps.

This is the hot loop: it has no per-step hooks and never reads a value back from the device
in a step, except every few steps for the progress bar.

A step is an optimizer step. With gradient accumulation (`--accumulate N`) a step takes N
batches (an epoch's last step the batches left); without it, one. The StepBudget counts steps,
so the scheduler, `global_step`, fractional epochs and resume all count optimizer steps, and a
checkpoint always falls between two steps, never inside one's batches: resume stays exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mnistlab.errors import TrainingDiverged

BAR_REFRESH_STEPS = 25  # the progress bar reads the loss back this often


@dataclasses.dataclass(frozen=True)
class StepBudget:
    """A run's optimizer steps: `epochs` (fractions allowed) times the steps of one epoch, rounded.

    Both the number of epochs and the steps of each come from here, so an epoch with no steps
    (e.g. `--epochs 1.001` rounding to one epoch of steps) never runs.
    """

    steps_per_epoch: int
    total_steps: int

    @classmethod
    def plan(cls, epochs: float, steps_per_epoch: int) -> "StepBudget":
        return cls(steps_per_epoch, max(1, round(epochs * steps_per_epoch)))

    @property
    def epochs(self) -> int:
        """How many epochs take at least one step (the last one may be partial)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def steps_in(self, epoch: int) -> int:
        """The steps epoch `epoch` (from 1) takes: a full epoch, the rest of the budget, or 0."""
        return max(0, min(self.steps_per_epoch, self.total_steps - (epoch - 1) * self.steps_per_epoch))


@dataclasses.dataclass
class EpochResult:
    loss: float
    accuracy: float
    seconds: float
    steps: int
    samples: int = 0
    batches: int = 0  # the loss is their mean
    loss_sum: float = 0.0  # float64, exact: an epoch trained in two parts merges to the loss of one


def train_one_epoch(
    model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer, scheduler: Any, *, max_steps: int,
    label_smoothing: float, clip_grad: float | None, autocast: Any, device: torch.device, bar: Any, epoch: int,
    accumulate: int = 1, max_batches: int | None = None, loss_weight: torch.Tensor | None = None,
) -> EpochResult:
    """One pass over `batches`: at most `max_batches` batches (default max_steps * accumulate), an optimizer
    step every `accumulate` of them and after the last. Raises TrainingDiverged on a NaN/inf loss.

    The losses stay on the device in a preallocated buffer: reading one back with
    `.item()` would stall every step (a GPU sync; a dispatch on CPU). They are read only
    for the progress bar every few batches and once at the end of the epoch.
    `clip_grad` None or 0 means no clipping. With accumulation each batch's loss is divided by
    the batches of its step, so N batches of B add up to the gradient of one batch of N*B;
    under DDP only a step's last batch synchronises the gradients. `loss_weight`: per-class
    weights of the cross-entropy (None: none).
    """
    model.train()
    max_batches = max_steps * accumulate if max_batches is None else max_batches
    skip_sync = getattr(model, "no_sync", None)  # DistributedDataParallel's
    losses = torch.zeros(max_batches, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    done = steps = seen = shown = group = 0
    start = time.perf_counter()
    for x, y in batches:
        if done >= max_batches:
            break
        if done % accumulate == 0:  # the first batch of a step
            optimizer.zero_grad(set_to_none=True)
            group = min(accumulate, max_batches - done)
        stepping = done % accumulate + 1 == group
        with _SYNC if stepping or skip_sync is None else skip_sync():
            with autocast:
                logits = model(x)
            # The loss in fp32 even under bf16 autocast: cross-entropy's log-sum-exp needs the range.
            loss = F.cross_entropy(logits.float(), y, weight=loss_weight, label_smoothing=label_smoothing)
            (loss if group == 1 else loss / group).backward()
        if stepping:
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            steps += 1
        losses[done] = loss.detach()
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        done += 1
        if bar is not None and done - shown >= BAR_REFRESH_STEPS:
            shown = _show(bar, losses, correct, shown, done, seen, epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.update(done - shown)
    _check_finite(losses[:done], epoch, 0)
    total = float(losses[:done].double().sum().item())  # float32 values summed in float64: no rounding
    return EpochResult(
        loss=total / done if done else math.nan, loss_sum=total,
        accuracy=correct.item() / max(seen, 1), seconds=seconds, steps=steps, samples=seen, batches=done,
    )


_SYNC = contextlib.nullcontext()  # a batch that synchronises (every batch without accumulation)


def _show(bar: Any, losses: torch.Tensor, correct: torch.Tensor, shown: int, steps: int, seen: int,
          epoch: int) -> int:
    """Advance the bar to `steps` with the recent mean loss; returns the new `shown`."""
    recent = losses[shown:steps]
    _check_finite(recent, epoch, shown)
    bar.update(steps - shown)
    bar.set_postfix(loss=f"{recent.mean().item():.4f}", acc=f"{correct.item() / seen:.4f}", refresh=False)
    return steps


def _check_finite(losses: torch.Tensor, epoch: int, offset: int) -> None:
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        step = int(bad.nonzero()[0, 0]) + offset + 1
        value = losses[step - offset - 1].item()
        raise TrainingDiverged(f"loss became {value} at epoch {epoch}, step {step}")


def epoch_row(epoch: int, result: EpochResult, lr: float) -> dict[str, Any]:
    """The metrics.csv row of an epoch, before validation fills valid_loss/valid_accuracy.

    `lr` is the rate of the epoch's first step (what it trained at; a scheduler may lower it
    within the epoch). `steps` and `samples` are kept in the history (not metrics.csv) so that
    a partial epoch can be completed later.
    """
    return {
        "epoch": epoch, "train_loss": result.loss, "train_accuracy": result.accuracy,
        "valid_loss": None, "valid_accuracy": None, "lr": lr, "train_seconds": result.seconds,
        "steps": result.steps, "samples": result.samples, "batches": result.batches, "loss_sum": result.loss_sum,
    }


def merge_rows(first: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    """One row for an epoch trained in two parts (a fractional run extended later):
    the loss the mean of both parts' batches (their exact sums; weighted by steps in rows older than that),
    the accuracy weighted by samples, times added, the first part's lr; validation from the second part."""
    a, b = int(first.get("steps") or 0), int(rest.get("steps") or 0)
    na, nb = int(first.get("samples") or 0), int(rest.get("samples") or 0)
    if not b:  # the second part trained nothing (a finished run resumed for its test pass): its loss is NaN
        rest = {**rest, "train_loss": 0.0, "loss_sum": 0.0, "batches": 0}
    merged = dict(rest)
    if first.get("batches") is not None and rest.get("batches") is not None:
        batches = first["batches"] + rest["batches"]
        merged.update(train_loss=(first["loss_sum"] + rest["loss_sum"]) / batches, batches=batches,
                      loss_sum=first["loss_sum"] + rest["loss_sum"])
    elif a + b:
        merged["train_loss"] = (first["train_loss"] * a + rest["train_loss"] * b) / (a + b)
    if na + nb:
        correct = round(first["train_accuracy"] * na) + round(rest["train_accuracy"] * nb)  # integers: exact
        merged["train_accuracy"] = correct / (na + nb)
    merged.update(lr=first["lr"], steps=a + b, samples=na + nb,
                  train_seconds=first["train_seconds"] + rest["train_seconds"])
    return merged
