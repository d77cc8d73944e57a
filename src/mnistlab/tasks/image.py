"""Image runs: a dataset of the catalog (or a folder/CSV), a model of the zoo, batches made on the device."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import mnistlab
from mnistlab.config import TrainConfig
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.scoring import predict_logits
from mnistlab.tasks.base import Prepared
from mnistlab.training.hardware import environment_info, has_conv, native_bf16

if TYPE_CHECKING:  # pragma: no cover
    from mnistlab.runs import Run
    from mnistlab.training.progress import Reporter
    from mnistlab.training.state import FitState
    from mnistlab.training.strategy import SingleProcess


def single_sample_batches(model: nn.Module, samples: int, batch_size: int) -> bool:
    """True when an epoch would end in a batch of one sample that a BatchNorm1d layer cannot train on."""
    return samples % batch_size == 1 and any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


class ImageTask:
    """A zoo model (`cfg.model`) on an image dataset (`cfg.dataset`)."""

    resume_command = "mnistlab train"

    def __init__(self) -> None:
        self.channels_last = False

    def prepare(self, cfg: TrainConfig, strategy: "SingleProcess", reporter: "Reporter",
                resume_from: "Run | None") -> Prepared:
        from mnistlab.data import load_dataset, split_indices
        from mnistlab.models import count_parameters

        with strategy.local_main_first():  # one process per machine downloads/unpacks
            data = load_dataset(cfg.dataset, cfg.data_dir, download=True, seed=cfg.seed)
        train_idx, valid_idx = split_indices(data.train_labels, cfg.valid_fraction, cfg.seed, cfg.stratify)
        if cfg.patience > 0 and len(valid_idx) == 0:
            raise UsageError("--patience needs a validation split: set --valid-fraction above 0")
        if len(train_idx) == 0:
            raise MnistlabError(f"dataset {cfg.dataset!r} has no training images")
        model, use_amp = self._model(cfg, data, strategy.device, reporter)
        params = count_parameters(model)
        model, step_model = strategy.wrap(model, compile=cfg.compile, sync_bn=cfg.sync_bn, seed=cfg.seed)
        batches = self._batches(cfg, data, train_idx, model, strategy, reporter)
        steps_per_epoch = strategy.min_over_ranks(len(batches))
        if steps_per_epoch == 0:
            raise UsageError(f"batch size {cfg.batch_size} is larger than the {len(train_idx)} training images with drop_last")
        device, channels_last = strategy.device, self.channels_last

        def predict(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
            return predict_logits(net, images, data.mean, data.std, device=device, batch_size=cfg.eval_batch_size,
                                  channels_last=channels_last)

        return Prepared(
            model=model, step_model=step_model, batches=batches, steps_per_epoch=steps_per_epoch,
            autocast=torch.autocast(device.type, dtype=torch.bfloat16) if use_amp else nullcontext(),
            classes=list(data.classes), valid=data.train_images[valid_idx], valid_labels=data.train_labels[valid_idx],
            test=data.test_images, test_labels=data.test_labels, predict=predict,
            model_spec={"name": cfg.model, "options": self._architecture(cfg)}, data_spec=_data_spec(cfg, data),
            summary={"model": cfg.model, "dataset": cfg.dataset, "parameters": params,
                     "mnistlab_version": mnistlab.__version__},
            environment=environment_info(device, use_amp, channels_last),
            describe=(
                f"training {cfg.model} ({params:,} parameters) on {cfg.dataset}: {len(train_idx):,} train / "
                f"{len(valid_idx):,} valid images, {cfg.epochs:g} epochs of {steps_per_epoch} steps, "
                f"{cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}, {device}{', bf16' if use_amp else ''}"
                f"{', channels_last' if channels_last else ''}"
            ),
        )

    def _model(self, cfg: TrainConfig, data: Any, device: torch.device, reporter: "Reporter") -> tuple[nn.Module, bool]:
        """The zoo model, initialised and on the device; and whether it trains under bf16 autocast."""
        from mnistlab.models import create_model, init_weights

        model = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                             image_size=data.image_size, **cfg.model_options)
        if cfg.init == "zeros":
            reporter.warn("init 'zeros' sets every weight to 0: units in a layer stay identical and the network cannot learn")
        init_weights(model, cfg.init)
        conv = has_conv(model)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else conv
        use_amp = cfg.amp == "bf16" or (cfg.amp == "auto" and native_bf16(device) and (device.type == "cuda" or conv))
        if cfg.amp == "bf16" and not native_bf16(device):
            reporter.warn(f"bf16 requested but {device} has no native bf16: it will be emulated and slow")
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model, use_amp

    def _batches(self, cfg: TrainConfig, data: Any, train_idx: Any, model: nn.Module, strategy: "SingleProcess",
                 reporter: "Reporter") -> Any:
        from mnistlab.data import BatchIterator

        def make(drop_last: bool) -> BatchIterator:
            return BatchIterator(
                data.train_images[train_idx], data.train_labels[train_idx], batch_size=per_rank, rank=strategy.rank,
                world_size=strategy.world_size, mean=data.mean, std=data.std, shuffle=True, seed=cfg.seed,
                drop_last=drop_last, device=strategy.device, channels_last=self.channels_last,
                augment=bool(cfg.augment),
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

    @staticmethod
    def _architecture(cfg: TrainConfig) -> dict[str, Any]:
        # Every option, the builder's defaults included: a checkpoint rebuilds the net it was
        # trained with even if a later mnistlab changes a default.
        from mnistlab.models import get_model_info

        return {**get_model_info(cfg.model).options, **cfg.to_dict()["model_options"]}

    def default_name(self, cfg: TrainConfig) -> str:
        return cfg.name or (cfg.model if cfg.dataset == "mnist" else f"{cfg.model}-{cfg.dataset.split(':')[0]}")

    def config_record(self, cfg: TrainConfig) -> dict[str, Any]:
        return cfg.to_dict()

    def write_files(self, path: Path) -> None:
        """Image runs have no files beyond the common ones."""

    def rebuild(self, ckpt: dict[str, Any], source: str, device: torch.device) -> nn.Module:
        from mnistlab.training.checkpoint import build_model_from_checkpoint

        model = build_model_from_checkpoint(ckpt, source).to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def report(self, run: "Run", state: "FitState") -> None:
        from mnistlab import report

        report.write_run_report(run, test_logits=state.test_logits)


def _data_spec(cfg: TrainConfig, data: Any) -> dict[str, Any]:
    return {
        "name": cfg.dataset, "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
        "in_channels": data.in_channels, "image_size": data.image_size,
    }
