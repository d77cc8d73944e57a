"""Training configuration: one typed dataclass, filled in layers.

Precedence, lowest first: `GLOBAL_DEFAULTS` < the model's recipe < a YAML `--config`
file < command-line flags. Every field left as None is filled by `resolve_config`,
and the fully resolved config is what a run folder's `config.yaml` records.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.choices import AMP_MODES, DEVICES, INIT_METHODS, MONITORS, OPTIMIZERS, PROGRESS_MODES, SCHEDULERS
from mnistlab.errors import UsageError

__all__ = [
    "AMP_MODES", "DEVICES", "GLOBAL_DEFAULTS", "INIT_METHODS", "MONITORS", "OPTIMIZERS", "PROGRESS_MODES", "SCHEDULERS",
    "TrainConfig", "as_recorded", "coerce_value", "load_config_file", "resolve_config", "validate",
]


@dataclass
class TrainConfig:
    """Everything needed to (re)run one training run. None means "model recipe, then global default"."""

    model: str = "fast"
    dataset: str = "mnist"
    data_dir: str | None = None
    channels: str | None = None  # folder: data: auto (None), 1 or 3
    image_size: int | None = None  # folder: data: the square side (None: 28 for 1 channel, 32 for 3)
    labels: str | None = None  # cifar100: fine (None) or coarse
    model_options: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    # Optimisation
    epochs: float | None = None  # fractions train part of the last epoch
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    scheduler: str | None = None
    step_size: int | None = None  # step scheduler: epochs between decays
    gamma: float | None = None  # step scheduler: decay factor
    pct_start: float | None = None  # onecycle: fraction of steps spent warming up
    label_smoothing: float | None = None
    clip_grad: float | None = None  # max gradient norm; None: the recipe's (if any); 0: no clipping
    augment: bool | None = None  # random shifts (digits) or crops and flips (colour), batched on the device
    rotate: float | None = None  # with augment: random rotations of up to this many degrees; 0: none
    zoom: float | None = None  # with augment: random scaling by 1 - zoom to 1 + zoom; 0: none
    ema: float | None = None  # decay of an average of the weights that validates and tests; 0: off
    accumulate: int | None = None  # batches per optimizer step (gradient accumulation); 1: off
    class_weights: str | None = None  # loss weights per class: "balanced" or a JSON file; None: none
    tta: bool | None = None  # the final test pass averages the softmax over shifted copies
    # Data split and early stopping
    seed: int = 0
    valid_fraction: float | None = None
    stratify: bool = False
    patience: int | None = None  # 0 disables early stopping
    monitor: str | None = None  # what picks the best epoch (best.pt) and early stopping: valid_loss or valid_accuracy
    drop_last: bool | None = None
    eval_batch_size: int = 2000
    # Hardware
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 on CUDA and on CPUs with AMX (convolutional nets), else off
    compile: bool = False
    channels_last: bool | None = None  # None: on for convolutional models
    threads: int | None = None
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (CUDA only)
    # Output
    out: str = "runs"
    name: str | None = None
    resume: str | None = None
    progress: str = "bar"
    plots: bool = True
    tensorboard: bool = False
    mlflow: str | None = None  # MLflow tracking URI; "default": $MLFLOW_TRACKING_URI, else ./mlruns
    mlflow_checkpoints: bool = False  # also upload checkpoints/ to MLflow at the end

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (tuples become lists) for YAML/JSON and checkpoints."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a dict, rejecting unknown keys with a suggestion and typing every value
        by its field (coerce_value): UsageError naming the field and `source` for a bad one."""
        check_keys(values, source)
        values = coerce_values(values, source)
        check_paths(values, source)
        return cls(**values)


# What a field gets when neither the model's recipe nor the user sets it.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "init": "default",
    "epochs": 10,
    "batch_size": 64,
    "lr": 1e-3,
    "optimizer": "adam",
    "momentum": 0.0,
    "nesterov": False,
    "betas": (0.9, 0.999),
    "weight_decay": 0.0,
    "scheduler": "none",
    "step_size": 5,
    "gamma": 0.1,
    "pct_start": 0.3,
    "label_smoothing": 0.0,
    "augment": False,
    "rotate": 0.0,
    "zoom": 0.0,
    "ema": 0.0,
    "accumulate": 1,
    "tta": False,
    "valid_fraction": 0.2,
    "patience": 0,
    "monitor": "valid_loss",
    "drop_last": False,
}

# Fields added to TrainConfig after run folders were already being written, with what a config.yaml
# that lacks them meant. A run from before resumes as it trained, not with a value a model's recipe
# gained since (best's rotate, zoom and monitor).
ABSENT_MEANS: dict[str, Any] = {"rotate": 0.0, "zoom": 0.0, "monitor": "valid_loss"}


def as_recorded(saved: dict[str, Any]) -> dict[str, Any]:
    """A run folder's config.yaml values with what each field it lacks (ABSENT_MEANS) meant when it trained.

    Every reader of a saved config goes through this (resume, a sweep's same-settings check, compare),
    so an old run is never taken for one trained with what a model's recipe gained since.
    """
    return {**ABSENT_MEANS, **saved}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def check_keys(values: dict[str, Any], source: str) -> None:
    known = field_names()
    for key in values:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=2)
            extra = f" Did you mean: {', '.join(hint)}?" if hint else ""
            raise UsageError(f"unknown setting {key!r} in {source}.{extra}")


# ---------------------------------------------------------------- typing values by their field
# YAML 1.1 reads `1e-3` as a string and a grid value is always one: each value is converted to
# the type its TrainConfig field declares, so `lr: 1e-3` is 0.001 and `stratify: "false"` is False.

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NONE = frozenset({"none", "null", "~"})


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    number = _to_float(value)  # "1e3" and 64.0 are whole numbers too
    if isinstance(number, float) and not number.is_integer():
        raise ValueError
    return int(number)


def _to_float(value: Any) -> int | float:
    """A number: ints stay ints (a valid float, and config.yaml keeps `epochs: 10`), text is parsed."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return float(value.strip())
    raise ValueError


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError


def _to_mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return dict(value)
    raise ValueError


def _to_numbers(value: Any, count: int) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) != count:
        raise ValueError
    return tuple(float(_to_float(v)) for v in items)


@functools.cache
def _kind(name: str) -> tuple[type, bool, int]:
    """(base type, whether None is allowed, tuple length) of TrainConfig field `name`."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint)
    optional = type(None) in args and typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        hint = next(a for a in args if a is not type(None))
    base = typing.get_origin(hint) or hint
    return base, optional, len(typing.get_args(hint)) if base is tuple else 0


_EXPECTED = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             dict: "a mapping of model options (key: value)"}


def coerce_value(name: str, value: Any, source: str) -> Any:
    """`value` converted to the type TrainConfig field `name` declares (str, int, float, bool, tuple, dict,
    or None where the field allows it).

    Text is parsed for the other types ("1e-3" -> 0.001, "false"/"no" -> False, "none" -> None),
    so YAML values and `--grid` strings are typed by the same rules.

    Raises:
        UsageError: the value cannot be converted; the message names the field and `source`.
    """
    base, optional, length = _kind(name)
    if name == "clip_grad" and isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return 0.0  # clipping switched off, as `--clip-grad none` (null still means the recipe's)
    if name == "channels" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML's `channels: 3`
    expected = f"{length} numbers like [0.9, 0.999]" if base is tuple else _EXPECTED[base]
    if value is None and base is dict:
        return {}  # `model_options:` left empty: no options
    if value is None or (optional and base is not str and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise _bad(name, value, source, expected)
    try:
        if base is tuple:
            return _to_numbers(value, length)
        return {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, dict: _to_mapping}[base](value)
    except (ValueError, TypeError):
        raise _bad(name, value, source, expected) from None


def _bad(name: str, value: Any, source: str, expected: str) -> UsageError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return UsageError(f"bad {name} {shown} in {source}: expected {expected}")


def coerce_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Every value of `values` (TrainConfig fields) typed by coerce_value."""
    return {key: coerce_value(key, value, source) for key, value in values.items()}


PATH_FIELDS = ("data_dir", "out", "name", "resume", "dataset", "class_weights")


def check_paths(values: dict[str, Any], source: str) -> None:
    """Paths and names must not hold a NUL character (the OS cannot represent one)."""
    for key in PATH_FIELDS:
        value = values.get(key)
        if isinstance(value, str) and "\x00" in value:
            raise UsageError(f"bad {key.replace('_', '-')} {value!r} in {source}: it contains a NUL character")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config with the safe loader; keys are TrainConfig fields (dashes allowed)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise UsageError(f"cannot read config file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {p} must hold a mapping of settings, not {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    source = f"config file {p}"
    # Run folders write `model_options`; hand-written files may say `set` like the flag.
    if "set" in data:
        given = data.pop("set")
        options = coerce_value("model_options", data.get("model_options"), source)
        try:
            data["model_options"] = {**options, **_to_mapping({} if given is None else given)}
        except ValueError:
            raise _bad("set", given, source, _EXPECTED[dict]) from None
    # Written by runs for the record, not settings: where a user's model came from is read from the
    # run itself (and its code is never imported because a config file names it).
    for key in ("package_version", "resolved", "model_code", "model_object", "data_sha256"):
        data.pop(key, None)
    check_keys(data, source)
    return coerce_values(data, source)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"bad {name} {value!r}: choose one of {', '.join(choices)}")


def _check_range(name: str, value: Any, low: float, high: float | None = None, *, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UsageError(f"bad {name} {value!r}: expected a number")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound += f" and <= {high}"
        raise UsageError(f"bad {name} {value!r}: must be {bound}")


def resolve_config(config: TrainConfig, *, load_code: bool = False) -> TrainConfig:
    """Fill every None from the model's recipe, then GLOBAL_DEFAULTS, and validate all values.

    The model options are checked against the model's signature here too, so a typo
    fails before any data is loaded. A model from the user's file (`file.py:NAME`) is imported
    to read its signature only with `load_code` (the caller's promise that the user named that
    code); it has no recipe.
    """
    values = dataclasses.asdict(config)
    values["model"], recipe, values["model_options"] = _model_recipe(config, values["model_options"], load_code)
    unset_warps = [key for key in ("rotate", "zoom") if values[key] is None]
    for key, default in GLOBAL_DEFAULTS.items():
        if values[key] is None:
            values[key] = recipe.get(key, default)
    for key, value in recipe.items():
        if key not in GLOBAL_DEFAULTS and key != "model_options" and values.get(key) is None:
            values[key] = value
    if values["betas"] is not None:
        values["betas"] = tuple(float(b) for b in values["betas"])
    values["class_weights"] = class_weights_setting(values["class_weights"])
    if not values["augment"]:  # --no-augment switches off the recipe's rotations too; the user's own are refused
        values.update({key: 0.0 for key in unset_warps})
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def class_weights_setting(value: str | None) -> str | None:
    """`class_weights` as a run records it: None (also for "none"), "balanced", or a JSON file's absolute
    path (so that a rerun from another folder reads the same file)."""
    if value is not None and not isinstance(value, (str, Path)):  # mnistlab.train(class_weights=[...])
        raise UsageError(f"bad class_weights {value!r}: \"balanced\" or the path of a JSON file of the weights "
                         "(a list or {class: weight}), not the weights themselves")
    if value is None or not str(value).strip() or str(value).strip().lower() in _NONE:
        return None
    if str(value).strip().lower() == "balanced":
        return "balanced"
    return str(Path(value).expanduser().absolute())


def _model_recipe(
    config: TrainConfig, options: dict[str, Any], load_code: bool
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(model name, its recipe, its options typed) for a zoo model or, with load_code, a user's model file
    (named by its absolute path; it has no recipe)."""
    from mnistlab.models import get_model_info, resolve_options
    from mnistlab.models.usercode import is_file_model, load_user_model, resolve_user_options

    if config.model.startswith("object:"):  # a module object given to mnistlab.fit: built by the user
        if options:
            raise UsageError(f"model options ({', '.join(options)}) are for zoo and file models; build your "
                             "module object with the settings you want")
        return config.model, {}, {}
    if not is_file_model(config.model):
        recipe = dict(get_model_info(config.model).recipe)
        return config.model, recipe, resolve_options(config.model, {**recipe.get("model_options", {}), **options})
    if not load_code:
        raise UsageError(f"the model {config.model} is code: it is imported only when named on the command line")
    user = load_user_model(config.model)
    return user.spec, {}, resolve_user_options(user, options)


def _check_data_options(cfg: TrainConfig) -> None:
    from mnistlab.data.sources import check_image_size, parse_channels

    parse_channels(cfg.channels)
    check_image_size(cfg.image_size)
    if cfg.labels is not None:
        _check_choice("labels", cfg.labels, ("fine", "coarse"))


def validate(cfg: TrainConfig) -> None:
    """Raise UsageError for any value out of its range or choices."""
    check_paths(dataclasses.asdict(cfg), "the config")
    _check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _check_choice("scheduler", cfg.scheduler, SCHEDULERS)
    _check_choice("init", cfg.init, INIT_METHODS)
    _check_choice("device", cfg.device, DEVICES)
    _check_choice("amp", cfg.amp, AMP_MODES)
    _check_choice("progress", cfg.progress, PROGRESS_MODES)
    _check_choice("monitor", cfg.monitor, MONITORS)
    _check_range("epochs", cfg.epochs, 0, 100_000, low_open=True)
    _check_data_options(cfg)
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            raise UsageError(f"bad {name.replace('_', '-')} {value!r}: expected a whole number from 1 to 1000000")
    _check_range("lr", cfg.lr, 0, 1e3, low_open=True)
    _check_range("momentum", cfg.momentum, 0, 1)
    _check_range("weight-decay", cfg.weight_decay, 0, 10)
    _check_range("label-smoothing", cfg.label_smoothing, 0, 1)
    _check_range("rotate", cfg.rotate, 0, 180)
    if isinstance(cfg.zoom, bool) or not isinstance(cfg.zoom, (int, float)) or not 0 <= cfg.zoom < 1:
        raise UsageError(f"bad zoom {cfg.zoom!r}: a number from 0 to below 1, like 0.1 (scaling by 0.9 to 1.1)")
    if (cfg.rotate or cfg.zoom) and not cfg.augment:
        raise UsageError("--rotate and --zoom add to --augment's shifts: pass --augment too (or use a model "
                         "whose recipe augments, like best)")
    _check_range("ema", cfg.ema, 0, 1)
    if cfg.ema >= 1:
        raise UsageError(f"bad ema {cfg.ema!r}: a decay below 1, like 0.999 (0 switches the average off)")
    if isinstance(cfg.accumulate, bool) or not isinstance(cfg.accumulate, int) or not 1 <= cfg.accumulate <= 65536:
        raise UsageError(f"bad accumulate {cfg.accumulate!r}: expected a whole number of batches from 1 to 65536")
    if not isinstance(cfg.tta, bool):
        raise UsageError(f"bad tta {cfg.tta!r}: expected true or false")
    _check_range("valid-fraction", cfg.valid_fraction, 0, 0.9)
    _check_range("gamma", cfg.gamma, 0, 1, low_open=True)
    _check_range("pct-start", cfg.pct_start, 0, 1, low_open=True)
    if cfg.pct_start >= 1:
        raise UsageError(f"bad pct-start {cfg.pct_start!r}: must be below 1")
    if cfg.betas is None or len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise UsageError(f"bad betas {cfg.betas!r}: expected two numbers in [0, 1)")
    for name in ("patience", "step_size", "seed"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "step_size" else 0):
            raise UsageError(f"bad {name.replace('_', '-')} {value!r}: expected a whole number >= 0")
    if cfg.seed > 2**63 - 1:
        raise UsageError(f"bad seed {cfg.seed!r}: too large")
    if cfg.clip_grad is not None:  # 0 switches clipping off, also where the model's recipe clips
        _check_range("clip-grad", cfg.clip_grad, 0, None)
    if cfg.mlflow is not None and (not isinstance(cfg.mlflow, str) or (cfg.mlflow != "default" and (
            "://" not in cfg.mlflow and not cfg.mlflow.startswith("databricks")))):
        raise UsageError(f"bad --mlflow {cfg.mlflow!r}: expected a tracking URI such as http://host:5000 or "
                         "sqlite:///mlflow.db (no value: $MLFLOW_TRACKING_URI, else ./mlruns)")
    if cfg.mlflow_checkpoints and cfg.mlflow is None:
        raise UsageError("--mlflow-checkpoints needs --mlflow [URI]: checkpoints go to the MLflow run")
    if cfg.threads is not None and (not isinstance(cfg.threads, int) or not 1 <= cfg.threads <= 1024):
        raise UsageError(f"bad threads {cfg.threads!r}: expected a whole number from 1 to 1024")
