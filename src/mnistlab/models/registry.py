"""The model registry: models are created by name, with options checked against their signature.

Adding a model is one decorated function in one file under `mnistlab/models/`:

    @register_model("my-net", description="...", recipe={"optimizer": "adam", "lr": 1e-3})
    def my_net(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 32) -> nn.Module:
        ...

Every builder takes the keyword-only arguments `in_channels`, `image_size` and
`num_classes` (filled from the dataset); its other keyword arguments are the
model's options, settable with `--set key=value`.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import inspect
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from mnistlab.errors import UsageError

# Arguments filled from the dataset, not user options.
DATA_ARGS = ("in_channels", "image_size", "num_classes")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    # Training-config overrides this model is best trained with (see TrainConfig fields).
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """The model's own options and their defaults (the dataset arguments excluded)."""
        sig = inspect.signature(self.builder)
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in DATA_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def accepts_none(self, option: str) -> bool:
        """Whether the builder declares None a value of `option` (`dropout: float | None`); the
        builder's docstring says what None means there."""
        hint = typing.get_type_hints(self.builder).get(option)
        return hint is None or type(None) in typing.get_args(hint)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str, *, description: str, recipe: dict[str, Any] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under `name`; registering a name twice is an error."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, builder, description, dict(recipe or {}))
        return builder

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names in registration order, optionally filtered by a glob (`cnn-*`)."""
    names = list(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for `name`, or a UsageError that suggests the closest names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        extra = f" Did you mean: {', '.join(hint)}?" if hint else ""
        if name.endswith(".py"):
            extra = f" A model of your own is its file and a class or function in it: --model {name}:NAME."
        raise UsageError(
            f"unknown model {name!r}.{extra} Known models: {', '.join(_REGISTRY)} (see `mnistlab models`)."
        ) from None


def coerce_option(model: str, key: str, value: Any, default: Any, nullable: bool) -> Any:
    """Check (and convert) one option value against the type of its default.

    None is a value only where the builder declares it (`nullable`); elsewhere it is refused
    rather than replaced by the default, which would train something other than what was asked.
    """
    if isinstance(value, str) and not isinstance(default, str):
        value = parse_value(value)
    if value is None and not nullable and default is not None:
        raise UsageError(
            f"option {key!r} of model {model!r} cannot be none: give a {type(default).__name__} "
            f"like the default {default!r}, or leave it out for the default"
        )
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, (tuple, list)):
        if isinstance(value, (int, float)):
            value = (value,)
        if isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value):
            return tuple(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    else:
        # A default that is an object (a class such as nn.ReLU, a function): --set can only give text,
        # numbers and lists, so that option is the builder's to fill.
        raise UsageError(f"option {key!r} of model {model!r} takes a Python object (default {default!r}), "
                         "which --set cannot give: build the model with it in your own code")
    raise UsageError(
        f"bad value {value!r} for option {key!r} of model {model!r}: expected {type(default).__name__} "
        f"like the default {default!r}"
    )


def parse_value(text: str) -> Any:
    """Parse a `--set` value: Python/YAML-ish literals, `a,b,c` lists and bare strings. Never `eval`."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null"):
        return None
    if "," in text and not text.startswith(("[", "(")):
        return tuple(parse_value(part) for part in text.split(",") if part.strip())
    # `784-128-128` is how the tutorials write layer sizes.
    if "-" in text[1:] and all(part.isdigit() for part in text.split("-")):
        return tuple(int(part) for part in text.split("-"))
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def resolve_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate user options for model `name`; returns them typed. Unknown keys suggest close ones."""
    info = get_model_info(name)
    known = info.options
    resolved: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=2)
            extra = f" Did you mean: {', '.join(hint)}?" if hint else ""
            choices = ", ".join(known) or "(none)"
            raise UsageError(f"model {name!r} has no option {key!r}.{extra} Its options: {choices}.")
        resolved[key] = coerce_option(name, key, value, known[key], info.accepts_none(key))
    return resolved


def parse_set_flags(pairs: list[str] | None) -> dict[str, Any]:
    """Turn `["k=v", ...]` from `--set` into a dict of raw strings (typed later by resolve_options)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def create_model(
    name: str, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **options: Any
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a registered name, e.g. "dnn" (see `list_models()`).
        num_classes, in_channels, image_size: the data's shape (square images).
        **options: the model's own options; options not given take the builder's defaults, and
            an explicit None reaches the builder where it declares None a value
            (`dnn(dropout=None)`: no dropout).

    Example:
        >>> model = create_model("dnn", hidden_dims=(784, 128, 128, 128))
    """
    info = get_model_info(name)
    # Before None reached the builders, an option given as None got its default, and checkpoints
    # recorded the None: for an option where None is no value, build those with the default, as
    # they were trained (the options where None is a value keep the default's layout for this).
    legacy = [k for k, v in options.items() if v is None and k in info.options and not info.accepts_none(k)]
    if legacy:
        warnings.warn(
            f"model {name!r}: {', '.join(f'{k}=None' for k in legacy)} built with the default "
            f"{', '.join(repr(info.options[k]) for k in legacy)}, as mnistlab did before it refused None "
            "there (a checkpoint recording it was trained so)",
            stacklevel=2,
        )
    resolved = resolve_options(name, {k: v for k, v in options.items() if k not in legacy})
    try:
        return info.builder(in_channels=in_channels, image_size=image_size, num_classes=num_classes, **resolved)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"cannot build model {name!r} with options {resolved}: {exc}") from exc


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
