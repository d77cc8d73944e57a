"""`mnistlab.train(config)`: an image run of a zoo model, on one process or under torchrun.

data -> model -> loss -> optimizer (+ scheduler) -> validation -> early stopping
-> checkpoints -> test metrics -> run folder. The loop itself is `mnistlab.training.trainer`;
this module resolves the settings (or a resumed run's own) and starts it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from mnistlab.config import TrainConfig, resolve_config
from mnistlab.models.usercode import ModelCode
from mnistlab.runs import Run
from mnistlab.tasks.image import ImageTask
from mnistlab.training.callbacks import Callback
from mnistlab.training.resume import resume_image_config
from mnistlab.training.strategy import make_strategy
from mnistlab.training.trainer import Trainer


def train(
    config: TrainConfig | dict[str, Any] | None = None, *, callbacks: Iterable[Callback] | None = None,
    model_code: str | Path | None = None, allow_changed_code: bool = False, given: Iterable[str] | None = None,
    **overrides: Any,
) -> Run:
    """Train a model as configured and return its run folder.

    Args:
        config: a TrainConfig (or a dict of its fields); None means all defaults
            (the `fast` model on MNIST).
        callbacks: extra `mnistlab.Callback`s, called after the built-in ones at each hook.
        model_code: resuming a run whose model is a user's file: that file (its sha256 must match
            the one recorded, unless allow_changed_code). A run never imports its code by itself.
        given: with `resume`, the settings the caller set on purpose (the CLI passes the flags given), so
            that one set to its default value is noticed too; None: those that differ from the defaults.
        **overrides: TrainConfig fields that replace the config's, e.g. `epochs=2`. `model` may be
            a zoo name or a user's model file, `path/to/file.py:NAME`.

    Returns:
        The Run (folder `runs/<name>/` with config.yaml, metrics.csv, summary.json,
        checkpoints/ and plots/). Its `summary` holds the test metrics.

    Raises:
        TrainingDiverged: the loss became NaN/inf (the run is marked failed, the best checkpoint kept).
        MnistlabError: bad data or configuration (a one-line message).
        KeyboardInterrupt: Ctrl-C (or mnistlab.errors.Terminated for SIGTERM); the run is resumable.

    Example:
        >>> run = train(TrainConfig(model="logistic", epochs=1))   # doctest: +SKIP
        >>> run.summary["accuracy"]                                 # doctest: +SKIP
    """
    cfg = _resolve(config, overrides)
    resume_from: Run | None = None
    if cfg.resume:
        cfg, resume_from = resume_image_config(cfg, ModelCode.of(model_code, allow_changed_code), given=given)
    # Under torchrun this joins the process group (DistributedDataParallel); otherwise one process.
    strategy = make_strategy(cfg.device, cfg.threads)
    run = Trainer(ImageTask(), cfg, strategy=strategy, callbacks=callbacks or (), resume_from=resume_from).fit()
    # Not in a `finally`: after a peer failed, tearing the group down can block; the process exits anyway.
    strategy.close()
    return run


def _resolve(config: TrainConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config, "config")
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            TrainConfig.from_dict(overrides, "train()")  # the unknown-setting message, with suggestions
        config = dataclasses.replace(config, **overrides)
    if config.resume:
        return config  # resolved from the run's own config.yaml in resume_image_config
    return resolve_config(config, load_code=True)  # the caller named the model (a file is imported)
