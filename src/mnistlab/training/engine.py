"""The training engine: one loop for every model in the zoo.

data -> model -> loss -> optimizer (+ scheduler) -> validation -> early stopping
-> checkpoints -> test metrics -> run folder. `train(config)` is the public entry point,
and `mnistlab train` only parses flags and calls it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import mnistlab
from mnistlab.config import TrainConfig, load_config_file, resolve_config
from mnistlab.errors import MnistlabError, TrainingDiverged, UsageError
from mnistlab.runs import Run, create_run_dir, load_run, run_summary, write_json, write_metrics_csv, write_yaml
from mnistlab.training import distributed
from mnistlab.training.checkpoint import link_or_copy, load_checkpoint, load_model_state, save_training_checkpoint
from mnistlab.training.early_stopping import EarlyStopping
from mnistlab.training.progress import Reporter


# ----------------------------------------------------------------------------- hardware

def select_device(name: str = "auto") -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit device that is missing is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: no Apple MPS device is available here (use --device auto or cpu)")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix math runs in hardware (CUDA Ampere+, CPUs with AVX512_BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The random generators' states as plain values (loadable with weights_only=True)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    py = random.getstate()
    state["python"] = [py[0], list(py[1]), py[2]]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------- optimisation

def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer named by cfg.optimizer; Adam/AdamW use the fused kernel where it exists."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov) and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        # One fused kernel per step instead of a loop of small ops (about 5% of a step on CPU).
        fused = device.type in ("cpu", "cuda")
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise UsageError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A scheduler stepped once per optimizer step (so fractional epochs work for all of them)."""
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=max(2, total_steps), pct_start=cfg.pct_start,
            anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4, cycle_momentum=False,
        )
    raise UsageError(f"unknown scheduler {cfg.scheduler!r}")


# ----------------------------------------------------------------------------- the loop

@dataclasses.dataclass
class EpochResult:
    loss: float
    accuracy: float
    seconds: float
    steps: int


def train_one_epoch(
    model: nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    max_steps: int,
    label_smoothing: float,
    clip_grad: float | None,
    autocast: Any,
    device: torch.device,
    bar: Any,
    epoch: int,
) -> EpochResult:
    """One pass over `batches` (at most `max_steps` steps). Raises TrainingDiverged on a NaN/inf loss.

    The losses stay on the device in a preallocated buffer: reading one back with
    `.item()` would stall every step (a GPU sync; a dispatch on CPU). They are read only
    for the progress bar every few steps and once at the end of the epoch.
    """
    model.train()
    losses = torch.zeros(max_steps, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    steps = seen = shown = 0
    refresh = 25
    start = time.perf_counter()
    for x, y in batches:
        if steps >= max_steps:
            break
        with autocast:
            logits = model(x)
        # The loss in fp32 even under bf16 autocast: cross-entropy's log-sum-exp needs the range.
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses[steps] = loss.detach()
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        steps += 1
        if bar is not None and steps - shown >= refresh:
            recent = losses[shown:steps]
            _check_finite(recent, epoch, shown)
            bar.update(steps - shown)
            bar.set_postfix(loss=f"{recent.mean().item():.4f}", acc=f"{correct.item() / seen:.4f}", refresh=False)
            shown = steps
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.update(steps - shown)
    losses = losses[:steps]
    _check_finite(losses, epoch, 0)
    return EpochResult(
        loss=float(losses.mean().item()) if steps else math.nan,
        accuracy=correct.item() / max(seen, 1),
        seconds=seconds,
        steps=steps,
    )


def _check_finite(losses: torch.Tensor, epoch: int, offset: int) -> None:
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        step = int(bad.nonzero()[0, 0]) + offset + 1
        value = losses[step - offset - 1].item()
        raise TrainingDiverged(f"loss became {value} at epoch {epoch}, step {step}")


def run_epoch(
    model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig, *,
    epoch: int, total_epochs: int, steps_per_epoch: int, total_steps: int, autocast: Any, device: torch.device,
    reporter: Reporter,
) -> EpochResult:
    """Epoch `epoch` of a run, as both engines run it: its batch order, its share of the
    (possibly fractional) step budget, and a progress bar around `train_one_epoch`."""
    batches.set_epoch(epoch)
    max_steps = min(steps_per_epoch, total_steps - (epoch - 1) * steps_per_epoch)
    bar = reporter.bar(max_steps, f"epoch {epoch}/{total_epochs}")
    try:
        return train_one_epoch(
            model, batches, optimizer, scheduler, max_steps=max_steps, label_smoothing=cfg.label_smoothing,
            clip_grad=cfg.clip_grad, autocast=autocast, device=device, bar=None if bar.disable else bar, epoch=epoch,
        )
    finally:
        bar.close()


def epoch_row(epoch: int, result: EpochResult, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The metrics.csv row of an epoch, before validation fills valid_loss/valid_accuracy."""
    return {
        "epoch": epoch, "train_loss": result.loss, "train_accuracy": result.accuracy,
        "valid_loss": None, "valid_accuracy": None,
        "lr": optimizer.param_groups[0]["lr"], "train_seconds": result.seconds,
    }


def early_stop_reason(cfg: TrainConfig, early: EarlyStopping) -> str:
    return (
        f"early stopping: valid loss did not improve for {cfg.patience} epochs "
        f"(best {early.best:.4f} at epoch {early.best_epoch})"
    )


# ----------------------------------------------------------------------------- the run

def _resolve(config: TrainConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config, "config")
    if overrides:
        config = dataclasses.replace(config, **overrides)
    if config.resume:
        return config  # resolved from the run's own config.yaml in _resume_config
    return resolve_config(config)


def _resume_config(requested: TrainConfig) -> tuple[TrainConfig, Run]:
    """The resumed run's own config; only epochs (to extend), device and progress may change."""
    run = _find_run(requested.resume, requested.out)
    if run_task(run) == "text":
        raise UsageError(f"{run.path} is a text run: resume it with mnistlab text train --resume {run.path}")
    saved = load_config_file(run.path / "config.yaml")
    cfg = TrainConfig.from_dict(saved, f"{run.path}/config.yaml")
    return resolve_config(dataclasses.replace(cfg, **resume_changes(requested, cfg, run))), run


def resume_changes(requested: TrainConfig, saved: TrainConfig, run: Run) -> dict[str, Any]:
    """The settings a resume may change: device, progress, and epochs (to train longer).

    A cosine or one-cycle schedule plans its learning rate over the run's original length,
    so with those the epochs cannot change.
    """
    changes: dict[str, Any] = {"resume": str(run.path), "device": requested.device, "progress": requested.progress}
    if requested.epochs is not None and requested.epochs != saved.epochs:
        if saved.scheduler in ("cosine", "onecycle"):
            raise UsageError(
                f"--epochs cannot change when resuming {run.path}: its {saved.scheduler} schedule plans the "
                f"learning rate over {saved.epochs:g} epochs. Resume without --epochs, or train a new run"
            )
        changes["epochs"] = requested.epochs
    return changes


@dataclasses.dataclass
class Resumed:
    """What a resumed run continues from: its last checkpoint, the epochs done and their time."""

    checkpoint: dict[str, Any]
    history: list[dict[str, Any]]
    start_epoch: int
    train_seconds: float


def training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, early: EarlyStopping, *,
    epoch: int, history: list[dict[str, Any]], train_seconds: float,
) -> dict[str, Any]:
    """The checkpoint entries that `restore_last_checkpoint` reads back (plain values and tensors only);
    each engine adds its model spec, data description and config."""
    return {
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "early_stopping": early.state_dict(),
        "rng": rng_state(),
        "epoch": epoch,
        "history": history,
        "train_seconds": train_seconds,
        "mnistlab_version": mnistlab.__version__,
    }


def restore_last_checkpoint(
    run: Run, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, early: EarlyStopping,
    *, epochs: float, tidy: bool = True,
) -> Resumed:
    """Load a run's checkpoints/last.pt into the model, optimizer, scheduler and early stopping.

    The random generators are left to the caller (each DDP rank restores its own stream).
    With tidy, the run folder is brought level with last.pt: a run killed between writing
    last.pt and the files after it gets its metrics.csv and best.pt back, and the temp files a
    killed write leaves (never under a final name) are removed. A finished run continues only
    if `epochs` (the resumed config's) goes beyond the epochs it ran, and not after early stopping.
    """
    path = run.path
    last = path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    summary = run.summary
    if summary.get("status") == "completed":
        if str(summary.get("stop_reason", "")).startswith("early stopping"):
            raise MnistlabError(f"run {path} ended by early stopping: there is nothing to resume; train a new run")
        if math.ceil(epochs) <= int(ckpt["epoch"]):
            raise MnistlabError(
                f"run {path} already finished its {epochs:g} epochs; pass a larger --epochs to train it longer"
            )
    load_model_state(model, ckpt["state_dict"], str(last))
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    early.load_state_dict(ckpt["early_stopping"])
    history = list(ckpt["history"])
    if tidy:
        for stale in [*path.glob(".*.tmp"), *(path / "checkpoints").glob(".*.tmp")]:
            stale.unlink(missing_ok=True)
        write_metrics_csv(path / "metrics.csv", history)
        if early.best_epoch and early.best_epoch == int(ckpt["epoch"]):
            link_or_copy(last, path / "checkpoints" / "best.pt")
    return Resumed(ckpt, history, int(ckpt["epoch"]) + 1, float(ckpt.get("train_seconds", 0.0)))


def run_task(run: Run) -> str:
    """"text" for a `mnistlab text` run, else "image" (also when config.yaml cannot be read:
    the image path then reports the unreadable file in its own words)."""
    try:
        config = run.config
    except Exception:  # noqa: BLE001 - unreadable or invalid YAML
        return "image"
    return "text" if isinstance(config, dict) and config.get("task") == "text" else "image"


def _find_run(ref: str, out: str) -> Run:
    p = Path(ref)
    if not p.is_dir() and (Path(out) / ref).is_dir():
        p = Path(out) / ref
    return load_run(p)


def environment_info(device: torch.device, amp: bool, channels_last: bool) -> dict[str, Any]:
    env = {
        "mnistlab_version": mnistlab.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "bf16_autocast": amp,
        "channels_last": channels_last,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def train(config: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> Run:
    """Train a model as configured and return its run folder.

    Args:
        config: a TrainConfig (or a dict of its fields); None means all defaults
            (the `fast` model on MNIST).
        **overrides: TrainConfig fields that replace the config's, e.g. `epochs=2`.

    Returns:
        The Run (folder `runs/<name>/` with config.yaml, metrics.csv, summary.json,
        checkpoints/ and plots/). Its `summary` holds the test metrics.

    Raises:
        TrainingDiverged: the loss became NaN/inf (the run is marked failed, the best checkpoint kept).
        MnistlabError: bad data or configuration (a one-line message).

    Example:
        >>> run = train(TrainConfig(model="logistic", epochs=1))   # doctest: +SKIP
        >>> run.summary["accuracy"]                                 # doctest: +SKIP
    """
    cfg = _resolve(config, overrides)
    resume_from: Run | None = None
    if cfg.resume:
        cfg, resume_from = _resume_config(cfg)
    # Under torchrun this joins the process group (DistributedDataParallel); otherwise a no-op.
    dist_ctx = distributed.setup(cfg.device, cfg.threads)
    run = _Trainer(cfg, resume_from, dist_ctx).run()
    # Not in a `finally`: after a peer failed, tearing the group down can block; the process exits anyway.
    distributed.destroy(dist_ctx)
    return run


class _Trainer:
    """Holds one run's state while it trains; `run()` is the whole data flow, top to bottom."""

    def __init__(
        self, cfg: TrainConfig, resume_from: Run | None, dist: distributed.DistContext = distributed.SINGLE
    ) -> None:
        self.cfg = cfg
        self.resume_from = resume_from
        self.dist = dist
        self.reporter = Reporter(cfg.progress, enabled=dist.is_main)  # only rank 0 prints

    def run(self) -> Run:
        from mnistlab.data import BatchIterator, load_dataset, split_indices
        from mnistlab.models import count_parameters, create_model, get_model_info, init_weights

        cfg, rep, ctx = self.cfg, self.reporter, self.dist
        started = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = ctx.device if ctx.enabled else select_device(cfg.device)
        seed_everything(cfg.seed)
        _require_tensorboard(cfg)  # before any run folder exists: a missing package fails fast

        # data
        if ctx.enabled and ctx.local_rank != 0:
            distributed.barrier(ctx)  # local rank 0 downloads/unpacks first: no two processes write the same files
        data = load_dataset(cfg.dataset, cfg.data_dir, download=True, seed=cfg.seed)
        if ctx.enabled and ctx.local_rank == 0:
            distributed.barrier(ctx)
        train_idx, valid_idx = split_indices(data.train_labels, cfg.valid_fraction, cfg.seed, cfg.stratify)
        if cfg.patience > 0 and len(valid_idx) == 0:
            raise UsageError("--patience needs a validation split: set --valid-fraction above 0")
        if len(train_idx) == 0:
            raise MnistlabError(f"dataset {cfg.dataset!r} has no training images")

        # model
        model = create_model(
            cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
            image_size=data.image_size, **cfg.model_options,
        )
        if cfg.init == "zeros":
            rep.warn("init 'zeros' sets every weight to 0: units in a layer stay identical and the network cannot learn")
        init_weights(model, cfg.init)
        channels_last = cfg.channels_last if cfg.channels_last is not None else has_conv(model)
        use_amp = cfg.amp == "bf16" or (cfg.amp == "auto" and native_bf16(device) and (device.type == "cuda" or has_conv(model)))
        if cfg.amp == "bf16" and not native_bf16(device):
            rep.warn(f"bf16 requested but {device} has no native bf16: it will be emulated and slow")
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        params = count_parameters(model)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_amp else nullcontext()
        step_model: nn.Module = torch.compile(model) if cfg.compile else model
        if ctx.enabled:
            # `model` stays the plain module (checkpoints, evaluation); DDP wraps it for the steps.
            model, ddp_model = distributed.wrap_model(model, ctx, sync_bn=cfg.sync_bn)
            step_model = torch.compile(ddp_model) if cfg.compile else ddp_model
            # Same weights everywhere (DDP broadcast them), but each rank its own dropout stream.
            seed_everything(cfg.seed + ctx.rank)

        batches = BatchIterator(
            data.train_images[train_idx], data.train_labels[train_idx],
            batch_size=distributed.per_rank_batch_size(cfg.batch_size, ctx), rank=ctx.rank, world_size=ctx.world_size,
            mean=data.mean, std=data.std, shuffle=True, seed=cfg.seed, drop_last=cfg.drop_last, device=device,
            channels_last=channels_last, augment=bool(cfg.augment),
        )
        # Under DDP every rank must take the same number of steps (a missing one hangs the gradient
        # all-reduce); shards can differ by a sample, so the shortest rank's count decides.
        steps_per_epoch = distributed.all_reduce_min(len(batches), ctx)
        if steps_per_epoch == 0:
            raise UsageError(f"batch size {cfg.batch_size} is larger than the {len(train_idx)} training images with drop_last")
        total_epochs = math.ceil(cfg.epochs)
        total_steps = max(1, round(cfg.epochs * steps_per_epoch))

        # loss is F.cross_entropy in train_one_epoch; optimizer and schedule
        optimizer = build_optimizer(cfg, model, device)
        scheduler = build_scheduler(cfg, optimizer, total_steps, steps_per_epoch)
        early = EarlyStopping(patience=cfg.patience)

        valid_images, valid_labels = data.train_images[valid_idx], data.train_labels[valid_idx]
        data_meta = {
            "name": cfg.dataset, "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
            "in_channels": data.in_channels, "image_size": data.image_size,
        }

        # run folder (or the resumed one)
        history: list[dict[str, Any]] = []
        start_epoch, train_seconds = 1, 0.0
        if self.resume_from is not None:
            path = self.resume_from.path
            resumed = restore_last_checkpoint(self.resume_from, model, optimizer, scheduler, early,
                                              epochs=cfg.epochs, tidy=ctx.is_main)
            ckpt = resumed.checkpoint
            rngs = ckpt.get("rng_per_rank") or []
            if not ctx.enabled:
                set_rng_state(ckpt["rng"])
            elif len(rngs) == ctx.world_size:
                set_rng_state(rngs[ctx.rank])
            else:  # saved by another number of processes: fresh, distinct streams per rank
                seed_everything(cfg.seed + ctx.rank + 1_000_003 * int(ckpt["epoch"]))
            history, start_epoch, train_seconds = resumed.history, resumed.start_epoch, resumed.train_seconds
            rep.info(f"resuming {path} from epoch {start_epoch}")
        else:
            name = cfg.name or (cfg.model if cfg.dataset == "mnist" else f"{cfg.model}-{cfg.dataset.split(':')[0]}")
            # Rank 0 alone makes the folder (create_run_dir adds -2, -3...: W ranks would make W folders).
            path = create_run_dir(cfg.out, name) if ctx.is_main else None
            if ctx.enabled:
                path = Path(distributed.broadcast_object(str(path) if path else None, ctx))
        run = Run(path)
        cfg = dataclasses.replace(cfg, name=path.name, resume=None)
        if ctx.is_main:
            write_yaml(path / "config.yaml", {**cfg.to_dict(), "package_version": mnistlab.__version__})
            env = environment_info(device, use_amp, channels_last)
            if ctx.enabled:
                env["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend}
            write_json(path / "environment.json", env)
        base_summary = {
            "name": path.name, "model": cfg.model, "dataset": cfg.dataset, "parameters": params,
            "mnistlab_version": mnistlab.__version__,
        }

        # Every option, the builder's defaults included: a checkpoint rebuilds the net it was
        # trained with even if a later mnistlab changes a default.
        architecture = {**get_model_info(cfg.model).options, **cfg.to_dict()["model_options"]}

        def checkpoint(epoch: int, best: bool) -> None:
            # A collective (every rank calls checkpoint()): each rank's RNG state, so resume restores them all.
            rngs = distributed.all_gather_object(rng_state(), ctx) if ctx.enabled else None
            if not ctx.is_main:
                return
            payload = {
                "model": {"name": cfg.model, "options": architecture},
                "data": data_meta,
                **training_state(model, optimizer, scheduler, early, epoch=epoch, history=history,
                                 train_seconds=train_seconds),
                **({"rng_per_rank": rngs} if rngs else {}),
                "config": cfg.to_dict(),
            }
            save_training_checkpoint(path / "checkpoints", payload, best)

        def write_summary(status: str, stop_reason: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
            summary = run_summary(
                base_summary, status=status, stop_reason=stop_reason, history=history, best_epoch=early.best_epoch,
                best_valid_loss=early.best, train_seconds=train_seconds,
                total_seconds=time.perf_counter() - started, extra=extra,
            )
            if ctx.is_main:
                write_json(path / "summary.json", summary)
            return summary

        if self.resume_from is None:
            # An epoch-0 checkpoint: even a run killed in its first epoch can be resumed.
            checkpoint(0, best=False)
        write_summary("running", "running")
        tb = _tensorboard_writer(cfg, path)
        rep.info(
            f"training {cfg.model} ({params:,} parameters) on {cfg.dataset}: {len(train_idx):,} train / "
            f"{len(valid_idx):,} valid images, {cfg.epochs:g} epochs of {steps_per_epoch} steps, "
            f"{cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}, {device}{', bf16' if use_amp else ''}"
            f"{', channels_last' if channels_last else ''} -> {path}"
        )

        stop_reason = f"completed {cfg.epochs:g} epochs"
        epoch = start_epoch - 1
        try:
            for epoch in range(start_epoch, total_epochs + 1):
                t0 = time.perf_counter()
                distributed.maybe_fail_for_test(ctx, epoch)
                result = run_epoch(
                    step_model, batches, optimizer, scheduler, cfg, epoch=epoch, total_epochs=total_epochs,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps, autocast=autocast, device=device,
                    reporter=rep,
                )
                if ctx.enabled:  # the epoch's train numbers over all ranks, not rank 0's shard alone
                    result.loss, result.accuracy = distributed.mean_over_ranks([result.loss, result.accuracy], ctx)
                train_seconds += result.seconds
                row = epoch_row(epoch, result, optimizer)
                if len(valid_idx):
                    if ctx.enabled:
                        distributed.broadcast_buffers(model, ctx)  # every rank evaluates rank 0's BN statistics
                    # Each rank predicts its shard; the logits are gathered: full valid-set numbers everywhere.
                    logits = distributed.predict_logits_sharded(
                        model, valid_images, data.mean, data.std, ctx=ctx, device=device,
                        batch_size=cfg.eval_batch_size, channels_last=channels_last,
                    )
                    row["valid_loss"] = float(F.cross_entropy(logits, valid_labels).item())
                    row["valid_accuracy"] = float((logits.argmax(1) == valid_labels).float().mean().item())
                    monitored = row["valid_loss"]
                else:
                    monitored = result.loss
                improved = early.update(monitored, epoch)
                # Rank 0 decides; all ranks follow, so they leave the loop together.
                improved, stop = distributed.broadcast_flags([improved, early.should_stop], ctx)
                row["epoch_seconds"] = time.perf_counter() - t0
                history.append(row)
                checkpoint(epoch, best=improved)
                if ctx.is_main:
                    write_metrics_csv(path / "metrics.csv", history)
                rep.epoch(row, cfg.epochs)
                if tb is not None:
                    _log_epoch(tb, row)
                if stop:
                    stop_reason = early_stop_reason(cfg, early)
                    break
        except TrainingDiverged as exc:
            write_summary("failed", f"diverged: {exc}")
            kept = (
                f"the best checkpoint (epoch {early.best_epoch}) is kept" if early.best_epoch else "no epoch finished"
            )
            raise TrainingDiverged(
                f"training diverged: {exc} (lr {cfg.lr:g}); {kept} in {path}. Try a lower --lr or --clip-grad."
            ) from None
        except KeyboardInterrupt:
            write_summary("interrupted", f"interrupted during epoch {epoch}")
            raise KeyboardInterrupt(
                f"interrupted during epoch {epoch}; the checkpoint of epoch {len(history)} is saved. "
                f"Resume with: mnistlab train --resume {path}"
            ) from None
        except (MnistlabError, OSError) as exc:
            # e.g. a full disk while checkpointing: the run folder must not claim to be still running.
            try:
                write_summary("failed", f"error: {exc}")
            except (MnistlabError, OSError):
                pass  # the disk may still be full; the error below is what matters
            raise

        if tb is not None:
            tb.close()
        # test metrics with the best checkpoint
        try:
            from mnistlab.evaluation import score
            from mnistlab.training.checkpoint import build_model_from_checkpoint

            best_path = path / "checkpoints" / "best.pt"
            which = "best" if best_path.is_file() else "last"
            best_ckpt = load_checkpoint(path / "checkpoints" / f"{which}.pt") if ctx.is_main else None
            if ctx.enabled:
                # Only rank 0 surely sees the files (other nodes may not share its disk): it sends the weights.
                wanted = ("model", "data", "state_dict")
                which, best_ckpt = distributed.broadcast_object(
                    (which, {k: best_ckpt[k] for k in wanted} if best_ckpt is not None else None), ctx
                )
            best_model = build_model_from_checkpoint(best_ckpt, which)
            best_model.to(device)
            if channels_last:
                best_model.to(memory_format=torch.channels_last)
            test_logits = distributed.predict_logits_sharded(
                best_model, data.test_images, data.mean, data.std, ctx=ctx, device=device,
                batch_size=cfg.eval_batch_size, channels_last=channels_last,
            )
            test = score(test_logits, data.test_labels, list(data.classes))
            summary = write_summary(
                "completed", stop_reason, {"split": "test", "checkpoint": which, **test}
            )
            if ctx.is_main:
                self._after(run, test_logits)
            rep.result(summary, str(path))
        except KeyboardInterrupt:
            write_summary("interrupted", "interrupted while computing the test metrics")
            raise KeyboardInterrupt(
                f"interrupted after training, while computing the test metrics; all {len(history)} epochs are saved. "
                f"Finish with: mnistlab train --resume {path}"
            ) from None
        return run

    def _after(self, run: Run, test_logits: torch.Tensor) -> None:
        """Plots and report; never fails a finished run."""
        if not self.cfg.plots:
            return
        try:
            from mnistlab import report
        except ImportError:
            return
        try:
            report.write_run_report(run, test_logits=test_logits)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
            self.reporter.warn(f"could not write plots/report for {run.path}: {exc}")


# ----------------------------------------------------------------------------- tensorboard

def _require_tensorboard(cfg: TrainConfig) -> None:
    """--tensorboard needs the optional `tensorboard` package: say how to get it, before training."""
    if not cfg.tensorboard:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - imported lazily: optional extra
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or pip install 'mnistlab[tensorboard]')"
        ) from None


def _tensorboard_writer(cfg: TrainConfig, path: Path) -> Any:
    """A SummaryWriter logging to RUN/tensorboard/, or None (not asked for, or not the main process)."""
    if not cfg.tensorboard:
        return None
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None  # one writer per run: rank 0's
    _require_tensorboard(cfg)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(path / "tensorboard"))


def _log_epoch(writer: Any, row: dict[str, Any]) -> None:
    """The epoch row's numbers as scalars (loss/train, accuracy/valid, ...), flushed so a kill loses nothing."""
    epoch = int(row["epoch"])
    for key, value in row.items():
        if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        split, _, metric = key.partition("_")
        tag = f"{metric}/{split}" if split in ("train", "valid") and metric in ("loss", "accuracy") else f"epoch/{key}"
        writer.add_scalar(tag, value, epoch)
    writer.flush()
