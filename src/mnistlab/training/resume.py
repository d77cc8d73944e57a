"""Resuming a run: finding it, what a resume may change, and bringing its last checkpoint back.

A run resumes from checkpoints/last.pt at the exact optimizer step it reached: after a whole
epoch, or inside one when a fractional run (`--epochs 0.5`) is trained longer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from mnistlab.config import TrainConfig, as_recorded
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.runs import Run, load_run, write_metrics_csv
from mnistlab.training.callbacks.base import CallbackList
from mnistlab.training.checkpoint import link_or_copy, load_checkpoint, load_model_state
from mnistlab.training.epoch import StepBudget

# What `--resume` may change: where the run and its data are, how it prints, how long it trains.
RESUME_MAY_CHANGE = ("resume", "out", "epochs", "device", "progress", "threads", "data_dir", "plots", "tensorboard",
                     "mlflow", "mlflow_checkpoints")


def find_run(ref: str, out: str) -> Run:
    """The run folder `ref`, or `out/ref` when ref is a run name."""
    p = Path(ref)
    if not p.is_dir() and (Path(out) / ref).is_dir():
        p = Path(out) / ref
    return load_run(p)


def run_task(run: Run) -> str:
    """"text" for a `mnistlab text` run, else "image" (also when config.yaml cannot be read:
    the image path then reports the unreadable file in its own words)."""
    try:
        config = run.config
    except Exception:  # noqa: BLE001 - unreadable or invalid YAML
        return "image"
    return "text" if isinstance(config, dict) and config.get("task") == "text" else "image"


_OTHER_KIND = {
    "image": "{path} is a text run: resume it with mnistlab text train --resume {path}",
    "text": "{path} is not a text run: resume it with mnistlab train --resume {path}",
}


def resumed_run(requested: TrainConfig, kind: str, also_given: dict[str, Any] | None = None,
                code_given: bool = False, given: Iterable[str] | None = None) -> Run:
    """The run `requested.resume` names, checked to be a `kind` run and asked for nothing a resume ignores.

    `given`: the TrainConfig settings the caller set (the CLI's flags); None: those that differ
    from TrainConfig's defaults. `also_given`: other settings given (a text run's), by name.
    `code_given`: `model` names the run's model file (its code, passed again), not a change.
    A setting given with the run's own value changes nothing and is accepted.
    """
    run = find_run(requested.resume, requested.out)
    if run_task(run) != kind:
        raise UsageError(_OTHER_KIND[kind].format(path=run.path))
    may_change = (*RESUME_MAY_CHANGE, "model") if code_given else RESUME_MAY_CHANGE
    asked = {name: getattr(requested, name) for name in (changed_fields(requested) if given is None else given)
             if name in _FIELDS}
    asked.update(also_given or {})
    saved = as_recorded(run.config)  # `--rotate 0` for a run from before --rotate is what it trained with
    refuse_ignored([name for name, value in asked.items() if name not in may_change
                    and not _same(value, saved.get(name))], run)
    return run


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _same(a: Any, b: Any) -> bool:
    """Equal as config.yaml would store them (tuples as lists, 2 as 2.0)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def refuse_ignored(given: list[str], run: Run) -> None:
    """A resumed run keeps its own settings: flags it would ignore are refused, by name."""
    if given:
        flags = ", ".join(_flag(name) for name in given)
        allowed = ", ".join(_flag(n) for n in RESUME_MAY_CHANGE if n not in ("resume", "progress"))
        raise UsageError(
            f"--resume continues {run.path} with its own settings, so {flags} cannot change "
            f"(with --resume you may pass {allowed}, --quiet or --jsonl); train a new run to change them"
        )


def _flag(name: str) -> str:
    return "--no-plots" if name == "plots" else "--" + name.replace("_", "-")


def changed_fields(requested: TrainConfig) -> list[str]:
    """The TrainConfig fields set to something other than their defaults (what the user asked for)."""
    default = TrainConfig()
    return [f.name for f in dataclasses.fields(TrainConfig)
            if getattr(requested, f.name) != getattr(default, f.name)]


def resume_changes(requested: TrainConfig, saved: TrainConfig, run: Run) -> dict[str, Any]:
    """The settings a resume takes from the command: see RESUME_MAY_CHANGE.

    A cosine or one-cycle schedule plans its learning rate over the run's original length,
    so with those the epochs cannot change.
    """
    changes: dict[str, Any] = {"resume": str(run.path), "device": requested.device, "progress": requested.progress}
    default = TrainConfig()
    for name in ("threads", "data_dir", "plots", "tensorboard",
                     "mlflow", "mlflow_checkpoints"):
        if getattr(requested, name) != getattr(default, name):
            changes[name] = getattr(requested, name)
    if requested.epochs is not None and requested.epochs != saved.epochs:
        if saved.scheduler in ("cosine", "onecycle"):
            raise UsageError(
                f"--epochs cannot change when resuming {run.path}: its {saved.scheduler} schedule plans the "
                f"learning rate over {saved.epochs:g} epochs. Resume without --epochs, or train a new run"
            )
        changes["epochs"] = requested.epochs
    return changes


def resume_image_config(
    requested: TrainConfig, code: Any, object_model: str | None = None, data_sha256: str | None = None,
    given: Iterable[str] | None = None,
) -> tuple[TrainConfig, Run]:
    """An image run's own config for a resume; only RESUME_MAY_CHANGE comes from the request.

    A run of a user's model file needs that file passed again (`code`, a usercode.ModelCode, or
    `--model FILE.py:NAME` in `requested.model`), with the sha256 it recorded: the run never
    imports it by itself. A run of a module object (mnistlab.fit) resumes only from Python, with an
    object of the same class (`object_model`) and, for data given as objects, the same data.
    """
    from mnistlab.config import load_config_file, resolve_config
    from mnistlab.models.usercode import ModelCode, is_file_model, verify_code

    if is_file_model(requested.model) and code.path is None:
        code = ModelCode.of(requested.model, code.allow_changed)
    run = resumed_run(requested, "image", code_given=code.path is not None or object_model is not None, given=given)
    saved = as_recorded(load_config_file(run.path / "config.yaml"))
    cfg = TrainConfig.from_dict(saved, f"{run.path}/config.yaml")
    if cfg.model.startswith("object:") and object_model != cfg.model:
        how = f"with an object of that class, not {object_model}" if object_model else "from Python"
        raise UsageError(f"{run.path} was trained with a Python object ({cfg.model[len('object:'):]}): resume it "
                         f"{how}: mnistlab.fit(YourNet(...), data, resume={str(run.path)!r})")
    recorded_data = run.config.get("data_sha256")
    if recorded_data and data_sha256 is None:
        raise UsageError(f"{run.path} was trained on data given to mnistlab.fit as objects: pass the same data "
                         f"again, mnistlab.fit(model, data, resume={str(run.path)!r})")
    if data_sha256 is not None and recorded_data and data_sha256 != recorded_data:
        raise UsageError(f"{run.path} was trained on other data than the data given now: pass the same data")
    if is_file_model(cfg.model):
        recorded = run.config.get("model_code") or {}
        cfg = dataclasses.replace(cfg, model=f"{verify_code(recorded, code, str(run.path))}:{recorded.get('name')}")
    return resolve_config(dataclasses.replace(cfg, **resume_changes(requested, cfg, run)), load_code=True), run


@dataclasses.dataclass
class Resumed:
    """Where a resumed run continues: its last checkpoint, history, step and times."""

    checkpoint: dict[str, Any]
    history: list[dict[str, Any]]
    global_step: int
    train_seconds: float
    total_seconds: float
    partial_row: dict[str, Any] | None  # the row of an epoch left half-done, to be completed

    def start_epoch(self, steps_per_epoch: int) -> int:
        return self.global_step // steps_per_epoch + 1


def steps_done(ckpt: dict[str, Any], steps_per_epoch: int) -> int:
    """The optimizer steps a checkpoint's run had taken (older checkpoints: from its epochs and config)."""
    if "global_step" in ckpt:
        return int(ckpt["global_step"])
    planned = StepBudget.plan(float(ckpt["config"]["epochs"]), steps_per_epoch).total_steps
    return min(int(ckpt["epoch"]) * steps_per_epoch, planned)


def check_same_data(saved: dict[str, Any], now: dict[str, Any], run: Run) -> None:
    """A resumed run must see the data it was trained on: the same classes, normalisation and digest."""
    for key in ("classes", "in_channels", "image_size", "sha256"):
        if key in saved and key in now and saved[key] != now[key]:
            raise MnistlabError(
                f"{run.path} was trained on other data than it finds now ({key} differs): resume it on the data "
                "it was trained on (check --data-dir, or the text run's --data)"
            )
    for key in ("mean", "std"):
        if key in saved and key in now and any(abs(a - b) > 1e-6 for a, b in zip(saved[key], now[key], strict=False)):
            raise MnistlabError(
                f"{run.path} was trained on other data than it finds now (its {key} {saved[key]} is now {now[key]}): "
                "resume it on the data it was trained on (check --data-dir)"
            )


def check_resumable(run: Run, done: int, budget: StepBudget, epochs: float) -> None:
    """Refuse a resume that has nothing to do: a run stopped by a decision, or one already at its length."""
    summary = run.summary
    reason = str(summary.get("stop_reason", ""))
    if summary.get("status") == "completed":
        if reason.startswith("early stopping"):
            raise MnistlabError(f"run {run.path} ended by early stopping: there is nothing to resume; train a new run")
        if not reason.startswith("completed"):
            raise MnistlabError(f"run {run.path} was stopped ({reason}): there is nothing to resume; train a new run")
        if done >= budget.total_steps:
            raise MnistlabError(
                f"run {run.path} already finished its {epochs:g} epochs; pass a larger --epochs to train it longer"
            )
    if done > budget.total_steps:
        raise MnistlabError(
            f"run {run.path} has already trained {done / budget.steps_per_epoch:g} epochs, more than "
            f"--epochs {epochs:g}: resume without --epochs, or pass a larger one"
        )


def restore_last_checkpoint(
    run: Run, model: Any, optimizer: Any, scheduler: Any, callbacks: CallbackList, *,
    budget: StepBudget, epochs: float, tidy: bool = True,
) -> Resumed:
    """Load a run's checkpoints/last.pt into the model, optimizer, scheduler and callbacks.

    The random generators are left to the caller (each DDP rank restores its own stream).
    With tidy, the run folder is brought level with last.pt: a run killed between writing
    last.pt and the files after it gets its metrics.csv and best.pt back, and the temp files a
    killed write leaves (never under a final name) are removed.
    """
    last = run.path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    spe = budget.steps_per_epoch
    if int(ckpt.get("steps_per_epoch", spe)) != spe:
        raise MnistlabError(
            f"{run.path} was trained with {ckpt['steps_per_epoch']} steps per epoch, but its data and batch size "
            f"give {spe} now: resume it on the data it was trained on"
        )
    done = steps_done(ckpt, spe)
    check_resumable(run, done, budget, epochs)
    load_model_state(model, ckpt["state_dict"], str(last))
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    callbacks.load_state_dicts(ckpt)
    start = done // spe + 1
    # Rows of whole epochs, then the row of an epoch left half-done (completed by this resume).
    history = [dict(r) for r in ckpt["history"] if int(r["epoch"]) < start]
    partial = next((dict(r) for r in ckpt["history"] if int(r["epoch"]) == start), None) if done % spe else None
    if partial is not None:
        partial.setdefault("steps", done % spe)  # older checkpoints did not record it
        history.append(partial)
    if tidy:
        _tidy(run.path, last, ckpt, history)
    seconds = float(ckpt.get("train_seconds", 0.0))
    total = max(seconds, float(ckpt.get("total_seconds", 0.0)), float(run.summary.get("total_seconds") or 0.0))
    return Resumed(ckpt, history, done, seconds, total, partial)


def _tidy(path: Path, last: Path, ckpt: dict[str, Any], history: list[dict[str, Any]]) -> None:
    for stale in [*path.glob(".*.tmp"), *(path / "checkpoints").glob(".*.tmp")]:
        stale.unlink(missing_ok=True)
    write_metrics_csv(path / "metrics.csv", history)
    best_epoch = (ckpt.get("early_stopping") or {}).get("best_epoch")
    if best_epoch and best_epoch == int(ckpt["epoch"]):
        link_or_copy(last, path / "checkpoints" / "best.pt")
