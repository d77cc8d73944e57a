"""`mnistlab.fit(model, data)`: train your own `nn.Module` (or a zoo model) on your own data, from Python.

The same engine, run folder, checkpoints, plots and report as `mnistlab.train`; what differs is
that the model and the data may be objects: a module defined anywhere (a notebook included) and
tensors, arrays or a torch Dataset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from torch import nn

from mnistlab.config import TrainConfig, resolve_config
from mnistlab.errors import UsageError
from mnistlab.models.usercode import ModelCode, is_file_model
from mnistlab.runs import Run, load_run
from mnistlab.tasks.image import ImageTask
from mnistlab.training.callbacks import Callback
from mnistlab.training.progress import Reporter
from mnistlab.training.resume import resume_image_config
from mnistlab.training.strategy import make_strategy
from mnistlab.training.trainer import Trainer


def fit(
    model: nn.Module | str,
    data: Any = "mnist",
    *,
    epochs: float | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    batch_size: int | None = None,
    out: str = "runs",
    name: str | None = None,
    callbacks: Iterable[Callback] | None = None,
    test: Any = None,
    memory_budget: int | None = None,
    **options: Any,
) -> Run:
    """Train `model` on `data` and return its Run (the same folder `mnistlab.train` writes).

    Args:
        model: an `nn.Module` instance (any class, defined anywhere), a zoo model name ("dnn"), or
            a model file "path/to/file.py:NAME". The module must map [B, C, H, W] images to
            [B, num_classes] logits; one forward pass on 2 images checks it before anything is written.
        data: a dataset name or spec as `--dataset` takes it ("mnist", "folder:PATH", "csv:PATH"); a
            pair `(images, labels)` of tensors or arrays (images uint8 0-255 or float 0-1, [N, C, H, W]
            or [N, H, W]; labels 0..K-1); or a `torch.utils.data.Dataset` of (image, label) items
            (torchvision datasets included). Its train/valid split is seeded as for named datasets.
        test: the test split, of the same kinds; without it a seeded 20% of `data` is held out
            (named datasets bring their own).
        memory_budget: bytes of images a Dataset may take in memory (default 2 GiB); a larger one is
            streamed through a DataLoader every epoch.
        epochs, lr, optimizer, batch_size: default 5 epochs of Adam at lr 1e-3 in batches of 64 for
            your own model, the recipe for a zoo model (`mnistlab models`); resuming, the run's own.
        out, name, callbacks: as for `mnistlab.train`.
        **options: every other TrainConfig field (`patience=3`, `scheduler="cosine"`, `seed=1`,
            `resume="runs/dnn"`, ...), validated as the flags are; for a zoo or file model also
            `set={...}`, its options.

    Returns:
        The Run. A model given as an object records its class's qualified name; rebuild it with
        `mnistlab.load_model(run, model=YourNet(...))`.

    Example:
        >>> run = mnistlab.fit(MyNet(), data=(images, labels), epochs=3)   # doctest: +SKIP
    """
    asked = {"epochs": epochs, "lr": lr, "optimizer": optimizer, "batch_size": batch_size, "name": name}
    own_model = not isinstance(model, str) or is_file_model(model)
    if own_model and not options.get("resume"):  # a zoo model has its recipe; yours gets fit's defaults
        asked = {k: _DEFAULTS[k] if v is None else v for k, v in asked.items()}
    settings = {**{k: v for k, v in asked.items() if v is not None}, "out": out, **options}
    if "set" in settings:
        settings["model_options"] = settings.pop("set")
    instance, settings["model"] = _model(model)
    given = _given(data, test, settings, memory_budget)
    settings["dataset"] = given.name if given else data
    cfg, resume_from = _config(TrainConfig.from_dict(settings, "fit()"), instance, given)
    if given is not None:
        _say_how(given, cfg)
    strategy = make_strategy(cfg.device, cfg.threads)
    task = ImageTask(model=instance, data=given.data if given else None, data_digest=given.sha256 if given else None)
    return Trainer(task, cfg, strategy=strategy, callbacks=callbacks or (), resume_from=resume_from).fit()


def _config(cfg: TrainConfig, instance: nn.Module | None, given: Any) -> tuple[TrainConfig, Run | None]:
    """The resolved config of a new run, or a resumed run's own (and the run)."""
    if not cfg.resume:
        return resolve_config(cfg, load_code=True), None  # a file model was named here, by the caller
    requested = dataclasses.replace(cfg, model="fast" if instance else cfg.model, dataset="mnist")
    return resume_image_config(requested, ModelCode(), instance and cfg.model, given.sha256 if given else None)


def _given(data: Any, test: Any, settings: dict[str, Any], memory_budget: int | None) -> Any:
    """Data given as objects, read (or set up to stream); None for a dataset name."""
    if isinstance(data, str):
        if test is not None:
            raise UsageError("test= goes with data given as objects; a named dataset brings its own test split")
        return None
    from mnistlab.data.given import given_data

    seed = settings.get("seed")
    if seed is None and settings.get("resume"):  # the run's own seed splits the data as it did then
        from mnistlab.training.resume import find_run

        seed = find_run(str(settings["resume"]), str(settings.get("out") or "runs")).config.get("seed")
    return given_data(data, test, seed=int(seed or 0), memory_budget=memory_budget,
                      show=settings.get("progress", "bar") != "quiet")


_DEFAULTS = {"epochs": 5, "lr": 1e-3, "optimizer": "adam", "batch_size": 64, "name": None}


def _model(model: Any) -> tuple[nn.Module | None, str]:
    if isinstance(model, nn.Module):
        return model, f"object:{type(model).__module__}.{type(model).__qualname__}"
    if isinstance(model, str):
        return None, model
    raise UsageError(f"model must be an nn.Module, a zoo model name or 'file.py:NAME', not a {type(model).__name__}")


def _say_how(given: Any, cfg: TrainConfig) -> None:
    d = given.data
    n, size = len(d.train_images) + len(d.test_images), d.train_images.shape[1:]
    how = "streamed from the Dataset each epoch (over the memory budget)" if given.streamed else "in memory"
    Reporter(cfg.progress).info(f"data: {n:,} images {list(size)} given to fit, {how}")


def load_model(run: str | Path | Run, model: nn.Module | None = None, checkpoint: str = "best",
               model_code: str | Path | None = None, allow_changed_code: bool = False) -> nn.Module:
    """A run's trained model (eval mode, CPU): its weights loaded into `model` (a fresh instance, for runs
    of a module object), or rebuilt (zoo models; file models with their `model_code`)."""
    from mnistlab.models.usercode import ModelCode, is_file_model
    from mnistlab.training.checkpoint import build_model_from_checkpoint, load_checkpoint

    run = load_run(run)
    path = run.checkpoint_path(checkpoint)
    if not path.is_file() and checkpoint == "best":
        path = run.checkpoint_path("last")
    return build_model_from_checkpoint(load_checkpoint(path), str(path),
                                       code=ModelCode.of(model_code, allow_changed_code), model=model)
