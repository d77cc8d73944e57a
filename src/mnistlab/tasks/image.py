"""Image runs: a dataset of the catalog (or a folder/CSV), a model of the zoo, batches made on the device."""

from __future__ import annotations

import copy
import functools
import json
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import mnistlab
from mnistlab.config import TrainConfig
from mnistlab.data.augment import augment_kind, augment_text
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.scoring import predict_logits
from mnistlab.tasks.base import Prepared
from mnistlab.training.hardware import bf16_pays, environment_info, has_conv, native_bf16

if TYPE_CHECKING:  # pragma: no cover
    from mnistlab.runs import Run
    from mnistlab.training.progress import Reporter
    from mnistlab.training.state import FitState
    from mnistlab.training.strategy import SingleProcess


def single_sample_batches(model: nn.Module, samples: int, batch_size: int) -> bool:
    """True when an epoch would end in a batch of one sample that a BatchNorm1d layer cannot train on."""
    return samples % batch_size == 1 and any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


def recorded_amp(resume_from: "Run | None") -> bool | None:
    """Whether the run being resumed trained under bf16 autocast (its environment.json); None: not known."""
    if resume_from is None:
        return None
    try:
        recorded = json.loads((resume_from.path / "environment.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = recorded.get("bf16_autocast") if isinstance(recorded, dict) else None
    return value if isinstance(value, bool) else None


def auto_amp(*, pays: bool, native: bool, conv: bool, cuda: bool, recorded: bool | None) -> bool:
    """`--amp auto`: bf16 for convolutional nets where it pays (CUDA, CPUs with AMX: `pays`); a resumed run
    keeps the precision it trained in (`recorded`), so that resume stays exact where the rule changed."""
    if recorded is not None:
        return recorded and native
    return pays and (cuda or conv)


class ImageTask:
    """A model on an image dataset: a zoo model or a user's file (`cfg.model`), or a module object
    (`model`, from mnistlab.fit); the dataset `cfg.dataset`, or `data` already in memory."""

    def resume_line(self, path: Path) -> str:
        if self.instance is not None or self.given_data is not None:  # only Python can give these again
            model = f"{type(self.instance).__name__}(...)" if self.instance is not None else repr(self.model_name)
            return f"mnistlab.fit({model}, data, resume={str(path)!r})  (the same model class and data)"
        code = f" --model-code {self.user.path}" if self.user is not None else ""
        return f"mnistlab train --resume {path}{code}"

    def __init__(self, model: nn.Module | None = None, data: Any = None, data_digest: str | None = None) -> None:
        self.instance, self.given_data, self.data_digest = model, data, data_digest
        self.user: Any = None  # the UserModel of a `file.py:NAME` model
        self.channels_last = False
        self.augment: Any = None  # the Augment that --augment picked for this data
        self.model_name = "model"  # cfg.model, for the resume line

    def prepare(self, cfg: TrainConfig, strategy: "SingleProcess", reporter: "Reporter",
                resume_from: "Run | None") -> Prepared:
        from mnistlab.data import load_dataset, split_indices
        from mnistlab.data.sources import data_options
        from mnistlab.models import count_parameters

        self.model_name, data = cfg.model, self.given_data
        if data is None:
            with strategy.local_main_first():  # one process per machine downloads/unpacks
                data = load_dataset(cfg.dataset, cfg.data_dir, download=True, seed=cfg.seed, **data_options(cfg))
        self.data = data
        train_idx, valid_idx = split_indices(data.train_labels, cfg.valid_fraction, cfg.seed, cfg.stratify)
        if cfg.patience > 0 and len(valid_idx) == 0:
            raise UsageError("--patience needs a validation split: set --valid-fraction above 0")
        if len(train_idx) == 0:
            raise MnistlabError(f"dataset {cfg.dataset!r} has no training images")
        model, use_amp = self._model(cfg, data, strategy.device, reporter, resume_from)
        params = count_parameters(model)
        model, step_model = strategy.wrap(model, compile=cfg.compile, sync_bn=cfg.sync_bn, seed=cfg.seed)
        self.augment = augment_kind(cfg.augment, data.in_channels, data.image_size, cfg.rotate, cfg.zoom)
        batches = self._batches(cfg, data, train_idx, model, strategy, reporter)
        steps_per_epoch = strategy.min_over_ranks(len(batches))
        if steps_per_epoch == 0:
            raise UsageError(f"batch size {cfg.batch_size} is larger than the {len(train_idx)} training images with drop_last")
        device, channels_last = strategy.device, self.channels_last

        def predict(net: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
            return predict_logits(net, images, data.mean, data.std, device=device, batch_size=cfg.eval_batch_size,
                                  channels_last=channels_last, tta=tta)

        return Prepared(
            model=model, step_model=step_model, batches=batches, steps_per_epoch=steps_per_epoch,
            autocast=torch.autocast(device.type, dtype=torch.bfloat16) if use_amp else nullcontext(),
            classes=list(data.classes), valid=data.train_images[valid_idx], valid_labels=data.train_labels[valid_idx],
            test=data.test_images, test_labels=data.test_labels, predict=predict,
            test_predict=functools.partial(predict, tta=True) if cfg.tta else None,
            class_counts=torch.bincount(data.train_labels[train_idx], minlength=len(data.classes)).tolist(),
            model_spec=self._model_spec(cfg), data_spec=_data_spec(cfg, data),
            summary={"model": cfg.model, "dataset": cfg.dataset, "parameters": params,
                     "image_shape": [data.in_channels, data.image_size, data.image_size],
                     "mnistlab_version": mnistlab.__version__, **self._provenance()},
            environment=environment_info(device, use_amp, channels_last),
            describe=(
                f"training {cfg.model} ({params:,} parameters) on {cfg.dataset}: {len(train_idx):,} train / "
                f"{len(valid_idx):,} valid images, {cfg.epochs:g} epochs of {steps_per_epoch} steps, "
                f"{cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}, {device}{', bf16' if use_amp else ''}"
                f"{f', {data.in_channels}x{data.image_size}x{data.image_size}' if data.in_channels > 1 else ''}"
                f"{f', augment: {augment_text(self.augment)}' if self.augment else ''}"
                f"{', channels_last' if channels_last else ''}"
            ),
        )

    def _model(self, cfg: TrainConfig, data: Any, device: torch.device, reporter: "Reporter",
               resume_from: "Run | None") -> tuple[nn.Module, bool]:
        """The model, checked, initialised and on the device; and whether it trains under bf16 autocast."""
        from mnistlab.models import init_weights

        model = self._build(cfg, data)
        if cfg.init == "zeros":
            reporter.warn("init 'zeros' sets every weight to 0: units in a layer stay identical and the network cannot learn")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "init 'zeros'", UserWarning)  # said once, by the reporter
            init_weights(model, cfg.init)
        conv = has_conv(model)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else conv
        use_amp = cfg.amp == "bf16" or (cfg.amp == "auto" and auto_amp(
            pays=bf16_pays(device), native=native_bf16(device), conv=conv, cuda=device.type == "cuda",
            recorded=recorded_amp(resume_from)))
        if cfg.amp == "bf16" and not native_bf16(device):
            reporter.warn(f"bf16 requested but {device} has no native bf16: it will be emulated and slow")
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model, use_amp

    def _batches(self, cfg: TrainConfig, data: Any, train_idx: Any, model: nn.Module, strategy: "SingleProcess",
                 reporter: "Reporter") -> Any:
        from mnistlab.data import BatchIterator
        from mnistlab.data.given import StreamBatches

        def make(drop_last: bool) -> Any:
            if not isinstance(data.train_images, torch.Tensor):  # a Dataset too large for memory: streamed
                return StreamBatches(
                    data.train_images[train_idx], data.train_labels[train_idx], batch_size=per_rank, mean=data.mean,
                    std=data.std, seed=cfg.seed, device=strategy.device, channels_last=self.channels_last,
                    drop_last=drop_last, rank=strategy.rank, world_size=strategy.world_size, augment=self.augment,
                )
            return BatchIterator(
                data.train_images[train_idx], data.train_labels[train_idx], batch_size=per_rank, rank=strategy.rank,
                world_size=strategy.world_size, mean=data.mean, std=data.std, shuffle=True, seed=cfg.seed,
                drop_last=drop_last, device=strategy.device, channels_last=self.channels_last,
                augment=self.augment,
            )

        per_rank = strategy.per_rank_batch(cfg.batch_size)
        batches = make(cfg.drop_last)
        if not cfg.drop_last and single_sample_batches(model, batches.num_samples, per_rank):
            reporter.warn(
                f"each epoch would end in a batch of 1 image ({batches.num_samples} images, batch {per_rank}), "
                "which BatchNorm cannot train on: that image is left out of each epoch (as with --drop-last)"
            )
            batches = make(True)
        return batches

    def _build(self, cfg: TrainConfig, data: Any) -> nn.Module:
        """A zoo model by name; a user's model (file or object), checked to give [B, classes] logits."""
        from mnistlab.models import create_model
        from mnistlab.models.usercode import build_user_model, check_output, is_file_model, load_user_model

        shape = {"in_channels": data.in_channels, "image_size": data.image_size, "num_classes": data.num_classes}
        if self.instance is not None:
            model, where = self.instance, type(self.instance).__qualname__
        elif is_file_model(cfg.model):
            self.user = load_user_model(cfg.model)  # the user named this file (train, or resume with its code)
            model, where = build_user_model(self.user, cfg.model_options, **shape), self.user.spec
        else:
            return create_model(cfg.model, **shape, **cfg.model_options)
        check_output(model, where, **shape)  # before any run folder exists
        return model

    def _model_spec(self, cfg: TrainConfig) -> dict[str, Any]:
        """The checkpoint's "model": what rebuilds the net. Every option is listed, the builder's defaults
        included, so a later mnistlab (or file) that changes a default still rebuilds the net trained."""
        from mnistlab.models import get_model_info
        from mnistlab.models.usercode import user_defaults

        options = cfg.to_dict()["model_options"]
        if self.instance is not None:
            return {"name": cfg.model, "options": {}, "object": {"class": _qualname(self.instance)}}
        if self.user is not None:
            return {"name": cfg.model, "options": {**_plain_values(user_defaults(self.user)), **options},
                    "code": self.user.record()}
        return {"name": cfg.model, "options": {**get_model_info(cfg.model).options, **options}}

    def _provenance(self) -> dict[str, Any]:
        """summary.json / config.yaml's record of where a user's model and data came from ({} for the zoo's)."""
        record: dict[str, Any] = {}
        if self.user is not None:
            record["model_code"] = self.user.record()
        if self.instance is not None:
            record["model_object"] = _qualname(self.instance)
        if self.data_digest is not None:
            record["data_sha256"] = self.data_digest
        return record

    def default_name(self, cfg: TrainConfig) -> str:
        from mnistlab.models.usercode import short_name

        if cfg.name:
            return cfg.name
        model = short_name(cfg.model)
        return model if cfg.dataset == "mnist" else f"{model}-{cfg.dataset.split(':')[0]}"

    def config_record(self, cfg: TrainConfig) -> dict[str, Any]:
        return {**cfg.to_dict(), **self._provenance()}

    def write_files(self, path: Path) -> None:
        """Image runs have no files beyond the common ones."""

    def rebuild(self, ckpt: dict[str, Any], source: str, device: torch.device) -> nn.Module:
        from mnistlab.training.checkpoint import build_model_from_checkpoint, eval_state_dict, load_model_state

        if self.instance is None:
            # A user's file is already loaded (and was checked) in this process: build from it again.
            model = build_model_from_checkpoint(ckpt, source, user=self.user)
        else:
            model = copy.deepcopy(self.instance)
            load_model_state(model, eval_state_dict(ckpt), source)
        model = model.eval().to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def report(self, run: "Run", state: "FitState") -> None:
        from mnistlab import report

        # The data as this run loaded it (data given to fit() is in no catalog; a folder is not read twice).
        report.write_run_report(run, test_logits=state.test_logits, data=self.data)


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _plain_values(options: dict[str, Any]) -> dict[str, Any]:
    """The options whose defaults are plain values (checkpoints load with weights_only: no objects)."""
    def plain(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    return {k: v for k, v in options.items() if plain(v)}


def _data_spec(cfg: TrainConfig, data: Any) -> dict[str, Any]:
    return {
        "name": cfg.dataset, "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
        "in_channels": data.in_channels, "image_size": data.image_size,
    }
