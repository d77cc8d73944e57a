"""The learning-rate range test (`mnistlab lr-find`): which learning rate to train a model with.

From a tiny rate to a large one, each optimizer step at a rate `start * (end / start) ** (i / (steps - 1))`
(an exponential sweep), on the run's own data, batches, model, optimizer, loss and augmentation.
The loss is smoothed (an exponential average with bias correction, beta 0.9: it trails the raw loss
by about 9 steps, a third of a decade of lr over 200 steps; fastai's 0.98 trails by 49) and the test
stops early when it explodes: the smoothed loss over 4 times its lowest, or a NaN/inf loss.

Rules for the suggestion (`rule`):
- `min10` (default): the rate of the lowest smoothed loss, divided by 10. Past the minimum the loss
  is about to blow up; a tenth of it is still in the fast-falling part.
- `steepest`: the rate where the smoothed loss falls fastest against log(lr), before the minimum.

Every step is the engine's own (`train_one_epoch` with one optimizer step), on a model and
optimizer built for the test and thrown away after it: nothing of a run is touched, so there
is nothing to restore. A model given as an object is copied first. The suggestion is only
printed and returned: `--apply` (or the caller) trains with it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from mnistlab.class_weights import loss_weights
from mnistlab.config import TrainConfig, resolve_config
from mnistlab.errors import Terminated, TrainingDiverged, UsageError
from mnistlab.signals import sigterm_as_interrupt
from mnistlab.training.epoch import train_one_epoch
from mnistlab.training.hardware import seed_everything, select_device
from mnistlab.training.optim import build_optimizer
from mnistlab.training.progress import Reporter
from mnistlab.training.strategy import SingleProcess

RULES = ("min10", "steepest")
RULE_TEXT = {
    "min10": "the lr of the lowest smoothed loss, divided by 10",
    "steepest": "the lr where the smoothed loss falls fastest (against log lr), before its minimum",
}
BETA = 0.9  # loss smoothing
EXPLODE = 4.0  # stop once the smoothed loss exceeds this many times its lowest
MIN_POINTS = 10  # fewer recorded steps than this give no suggestion
MIN_DROP = 0.05  # a smoothed loss that never fell by this share of its start gives no suggestion


@dataclasses.dataclass
class LRFindResult:
    """The range test: the rate and loss of each step, the smoothed losses, and the suggestion."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    stopped: str  # why the test ended

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """`suggested lr 3.2e-03 (rule min10: ...)`: what the command prints."""
        return f"suggested lr {self.suggestion:.2e} (rule {self.rule}: {RULE_TEXT[self.rule]}); {self.stopped}"


def suggest(lrs: list[float], smoothed: list[float], rule: str) -> float:
    """The suggested rate of a range test by `rule` (see the module docstring)."""
    if rule not in RULES:
        raise UsageError(f"bad rule {rule!r}: choose {' or '.join(RULES)}")
    if len(lrs) < MIN_POINTS:
        raise UsageError(f"the loss exploded after {len(lrs)} steps, too few for a suggestion: "
                         "lower --start-lr, or give more --steps")
    low = min(range(len(smoothed)), key=smoothed.__getitem__)
    if low < 2 or smoothed[low] > (1 - MIN_DROP) * smoothed[0]:
        raise UsageError(f"the smoothed loss fell by less than {MIN_DROP:.0%} between lr {lrs[0]:.2e} and {lrs[-1]:.2e} "
                         f"(from {smoothed[0]:.4g} to {smoothed[low]:.4g}): no rate to suggest; widen the range "
                         "(--start-lr, --end-lr) or check the model and data")
    if rule == "min10":
        return lrs[low] / 10
    logs = [math.log(lr) for lr in lrs[: low + 1]]
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, low)]
    return lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]


def _groups(batches: Any, size: int) -> Iterator[list[Any]]:
    """Lists of `size` batches, epoch after epoch (each epoch's order as training would see it)."""
    for epoch in itertools.count(1):
        batches.set_epoch(epoch)
        it = iter(batches)
        while group := list(itertools.islice(it, size)):
            yield group


def range_test(task: Any, cfg: TrainConfig, *, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200,
               rule: str = "min10", reporter: Reporter | None = None) -> LRFindResult:
    """Run the range test for `task` (e.g. mnistlab.tasks.image.ImageTask()) trained as `cfg` (resolved)."""
    if not (0 < start_lr < end_lr and math.isfinite(end_lr / start_lr)):  # inf: every rate after the first
        raise UsageError(f"the range test needs 0 < --start-lr < --end-lr, finite, got {start_lr:g} and {end_lr:g}")
    if not 2 <= steps <= 100_000:
        raise UsageError(f"bad --steps {steps}: from 2 to 100000")
    if rule not in RULES:  # said now, not after the test
        raise UsageError(f"bad rule {rule!r}: choose {' or '.join(RULES)}")
    reporter = reporter or Reporter(cfg.progress)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    strategy = SingleProcess(select_device(cfg.device))
    prep = task.prepare(cfg, strategy, reporter, None)
    optimizer = build_optimizer(cfg, prep.model, strategy.device)
    weights = loss_weights(cfg.class_weights, prep.class_counts or [], prep.classes)
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=strategy.device)
    lrs, losses, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, f"reached --end-lr {end_lr:g} after {steps} steps"
    for i, group in zip(range(steps), _groups(prep.batches, int(cfg.accumulate or 1))):
        lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
        for g in optimizer.param_groups:
            g["lr"] = lr
        try:
            loss = train_one_epoch(
                prep.step_model, group, optimizer, None, max_steps=1, label_smoothing=cfg.label_smoothing,
                clip_grad=cfg.clip_grad, autocast=prep.autocast, device=strategy.device, bar=None, epoch=1,
                accumulate=len(group), loss_weight=weight,
            ).loss
        except TrainingDiverged:
            stopped = f"stopped at lr {lr:.2e}: the loss became NaN/inf"
            break
        avg = BETA * avg + (1 - BETA) * loss
        value = avg / (1 - BETA ** (i + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > EXPLODE * best:
            stopped = f"stopped at lr {lr:.2e}: the smoothed loss passed {EXPLODE:g} times its lowest"
            break
    if len(lrs) == steps and min(range(len(smoothed)), key=smoothed.__getitem__) >= 0.9 * steps:
        stopped += "; the loss was still falling near --end-lr: a larger one may suggest a larger rate"
    # 3 significant digits: what a person would type, and what config.yaml then shows.
    return LRFindResult(lrs, losses, smoothed, float(f"{suggest(lrs, smoothed, rule):.3g}"), rule, stopped)


def _check_plot(plot: Path) -> None:
    """A UsageError, before the test, when the plot could not be written where asked."""
    if plot.suffix.lower() != ".png":
        raise UsageError(f"{plot}: the plot is written as PNG; use a .png file name")
    if plot.is_dir():
        raise UsageError(f"cannot write the plot {plot}: it is a folder; give a file name")
    folder = next(p for p in (plot.absolute(), *plot.absolute().parents) if p.exists() or p == Path(p.anchor))
    if folder != plot.absolute() and (not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK)):
        raise UsageError(f"cannot write the plot {plot}: {folder} is not a writable folder")
    if plot.exists() and not os.access(plot, os.W_OK):
        raise UsageError(f"cannot write the plot {plot}: the file is not writable")


def lr_find(config: TrainConfig | dict[str, Any] | None = None, *, model: nn.Module | str | None = None,
            start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200, rule: str = "min10",
            plot: str | Path | None = None, **overrides: Any) -> LRFindResult:
    """The learning-rate range test for a model as `mnistlab.train` would train it (nothing is trained or written,
    but `plot`, a PNG of the loss against the rate with the suggestion marked).

    Args:
        config: a TrainConfig or dict of its fields (None: defaults); `overrides` replace its fields.
        model: a zoo model name or "file.py:NAME" (as `config.model`), or a module object (a copy is tested;
            the object itself is untouched).
        start_lr, end_lr, steps: the exponential sweep. rule: "min10" or "steepest" (see the module docstring).

    Example:
        >>> result = lr_find(model="best", steps=100, plot="lr-find.png")   # doctest: +SKIP
        >>> result.suggestion, result.rule                                   # doctest: +SKIP
    """
    from mnistlab.tasks.image import ImageTask

    cfg = TrainConfig.from_dict(config, "config") if isinstance(config, dict) else (config or TrainConfig())
    if isinstance(model, str):
        overrides["model"], model = model, None
    elif model is not None:
        overrides["model"] = f"object:{type(model).__module__}.{type(model).__qualname__}"
    cfg = resolve_config(dataclasses.replace(cfg, **overrides), load_code=True)
    if cfg.resume:
        raise UsageError("the range test trains a fresh copy of a model: it does not take --resume")
    if plot is not None:  # said now, not after the test
        _check_plot(Path(plot))
    try:
        with sigterm_as_interrupt():  # SIGTERM (a timeout, a scheduler) ends it like Ctrl-C, with exit 143
            result = range_test(ImageTask(model=copy.deepcopy(model) if model is not None else None), cfg,
                                start_lr=start_lr, end_lr=end_lr, steps=steps, rule=rule)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        raise type(exc)(f"{how} during the range test; nothing was saved") from None
    if plot is not None:
        from mnistlab.plots import plot_lr_find

        plot_lr_find(result, plot, title=f"{cfg.model}: learning-rate range test")
    return result
