"""A model from the user's own file: `--model path/to/file.py:NAME`.

NAME is an `nn.Module` subclass or a function that returns a module. Its keyword arguments are
the model's options (`--set key=value`), typed from their defaults or annotations; the
arguments the data fixes (`num_classes`, `in_channels`, `image_size`) are passed when it takes them.

This is a security boundary. A file is imported only when the user names it (on the command
line, or from Python); a run folder or checkpoint that records a file never imports it by
itself. Rebuilding such a run needs the code passed again (`ModelCode`), and its sha256 must
match the one recorded, unless the user allows a changed file.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import importlib.util
import inspect
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mnistlab.errors import MnistlabError, UsageError
from mnistlab.models.registry import DATA_ARGS, coerce_option, parse_value


def parse_spec(text: str) -> tuple[Path, str] | None:
    """`path/to/file.py:NAME` -> (path, NAME); None for anything else (a zoo name)."""
    path, sep, name = str(text).rpartition(":")
    if not sep or not path.endswith(".py"):
        return None
    if not name.isidentifier():
        raise UsageError(f"--model {text}: after the file comes the name of a class or function, e.g. {path}:DNN")
    return Path(path).expanduser(), name


def is_file_model(text: str) -> bool:
    """True for a `file.py:NAME` model (whether or not the file exists)."""
    return parse_spec(str(text)) is not None


def short_name(model: str) -> str:
    """A model's name for run folders: a zoo name as it is, `file.py:DNN` -> `dnn`, `object:pkg.Net` -> `net`."""
    parsed = parse_spec(model)
    if parsed is not None:
        return _folder_safe(parsed[1])
    if model.startswith("object:"):
        return _folder_safe(model.rpartition(".")[2])
    return model


def _folder_safe(name: str) -> str:
    """A Python name as a run folder's: `_Net` -> `net`, `Réseau` -> `rseau` (run names are ASCII, no leading `_`)."""
    return re.sub(r"[^a-z0-9._+=,-]", "", name.lower()).lstrip("._-") or "model"


def sha256_of(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise UsageError(f"model file {path} cannot be read: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class ModelCode:
    """Model code the user passed explicitly to rebuild a run (`--model-code FILE.py`)."""

    path: Path | None = None
    allow_changed: bool = False

    @classmethod
    def of(cls, path: str | Path | None, allow_changed: bool = False) -> "ModelCode":
        if path is not None and is_file_model(str(path)):
            path = parse_spec(str(path))[0]  # FILE.py:NAME is accepted too: the file is what counts
        return cls(Path(path).expanduser() if path else None, allow_changed)


@dataclass(frozen=True)
class UserModel:
    """A model builder loaded from a user's file, and where it came from."""

    path: Path  # absolute
    name: str
    sha256: str
    builder: Callable[..., Any]

    @property
    def spec(self) -> str:
        return f"{self.path}:{self.name}"

    def record(self) -> dict[str, str]:
        """What a run records about its model's code (config.yaml, summary.json, checkpoints)."""
        return {"path": str(self.path), "name": self.name, "sha256": self.sha256}


def load_user_model(spec: str) -> UserModel:
    """Import the file named by `spec` (`file.py:NAME`) and return its builder. Only for code the user named."""
    parsed = parse_spec(spec)
    if parsed is None:
        raise UsageError(f"{spec!r} is not a model file: expected path/to/file.py:NAME")
    path, name = parsed
    path = path.resolve()
    if not path.exists():
        raise UsageError(f"model file {path} does not exist")
    if not path.is_file():
        raise UsageError(f"model file {path} is not a file")
    sha = sha256_of(path)
    module = _import(path, sha)
    if not hasattr(module, name):
        found = [k for k, v in vars(module).items() if not k.startswith("_") and _is_builder(v)
                 and getattr(v, "__module__", None) == module.__name__]
        hint = difflib.get_close_matches(name, found, n=1)
        extra = f" Did you mean {hint[0]}?" if hint else ""
        raise UsageError(f"model file {path} has no {name!r}.{extra} It defines: {', '.join(found) or 'no model'}")
    builder = getattr(module, name)
    if not _is_builder(builder):
        raise UsageError(
            f"{path}:{name} is a {type(builder).__name__}, not an nn.Module subclass or a function that returns one"
        )
    return UserModel(path, name, sha, builder)


def _is_builder(obj: Any) -> bool:
    if inspect.isclass(obj):
        return issubclass(obj, nn.Module)
    return inspect.isfunction(obj)


def _import(path: Path, sha: str) -> Any:
    """Run the file as a module of its own (named by its hash, so two versions never mix)."""
    module_name = f"mnistlab_user_{path.stem}_{sha[:12]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # classes defined in the file must pickle/find their module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise UsageError(f"model file {path} does not import: SyntaxError: {exc.msg} (line {exc.lineno})") from None
    except ImportError as exc:
        del sys.modules[module_name]
        raise UsageError(f"model file {path} does not import: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything while importing
        del sys.modules[module_name]
        raise UsageError(f"model file {path} failed while importing: {type(exc).__name__}: {exc}") from None
    return module


def builder_options(builder: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The builder's keyword arguments that are options (the data arguments and *args/**kwargs excluded)."""
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name: p for p in params if p.kind in kinds and p.name not in DATA_ARGS and p.name != "self"}


def accepts(builder: Callable[..., Any], name: str) -> bool:
    """Whether the builder names `name` among its arguments (a catch-all **kwargs does not count: it often
    passes everything on, e.g. to nn.Module.__init__, which takes no data arguments)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    return name in params and params[name].kind is not inspect.Parameter.VAR_KEYWORD


def takes_any_keyword(builder: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def type_hints(builder: Callable[..., Any]) -> dict[str, Any]:
    target = builder.__init__ if inspect.isclass(builder) else builder
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults' types
        return {}


def check_output(model: nn.Module, where: str, in_channels: int, image_size: int, num_classes: int) -> None:
    """Forward passes the way training and evaluation will make them: the model must give float
    [B, num_classes] logits for a batch of 2 in eval mode and of 3 in training mode (on a copy, with
    the random generators restored, so neither the model nor the run's random streams change)."""
    import copy

    _check_pass(model, where, (2, in_channels, image_size, image_size), num_classes, train=False)
    with torch.random.fork_rng(devices=[]):
        _check_pass(copy.deepcopy(model), where, (3, in_channels, image_size, image_size), num_classes, train=True)


def _check_pass(model: nn.Module, where: str, shape: tuple[int, ...], num_classes: int, *, train: bool) -> None:
    mode = "in training mode " if train else ""
    was_training = model.training
    model.train(train)
    try:
        with torch.set_grad_enabled(train):
            out = model(torch.zeros(shape))
    except Exception as exc:  # noqa: BLE001 - any error of the user's forward is reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"model {where} fails {mode}on a batch of shape {list(shape)}: {type(exc).__name__}: {first}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (shape[0], num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(
            f"model {where} maps a batch of shape {list(shape)} {mode}to {got}; it must give logits of shape "
            f"[{shape[0]}, {num_classes}] (batch, classes)"
        )
    if not out.is_floating_point() or (train and not out.requires_grad):
        raise UsageError(f"model {where} gives {out.dtype} logits{' without a gradient' if train else ''}: it must "
                         "give float logits computed from its parameters")


def verify_code(recorded: dict[str, Any], code: ModelCode, run: str) -> Path:
    """The file to rebuild a run's model from: the one the user passed, with the recorded sha256.

    Raises MnistlabError saying what to pass when no code was given, and naming both hashes when
    the file changed (unless the user allowed a changed file).
    """
    want = recorded.get("sha256", "")
    if code.path is None:
        raise MnistlabError(
            f"{run} was trained with the model in {recorded.get('path')}:{recorded.get('name')} (sha256 {want[:16]}...); "
            "a run never imports that code by itself: pass it with --model-code FILE.py (in Python: model_code=\"FILE.py\")"
        )
    path = code.path.resolve()
    if not path.is_file():
        raise UsageError(f"--model-code {path} {'is not a file' if path.exists() else 'does not exist'}")
    got = sha256_of(path)
    if got != want and not code.allow_changed:
        raise MnistlabError(
            f"--model-code {path} is not the file {run} was trained with: its sha256 is {got}, the run recorded "
            f"{want}; pass --allow-changed-code (in Python: allow_changed_code=True) to use it anyway"
        )
    return path


def _typed_default(default: Any, hint: Any) -> Any:
    """A stand-in default whose type is the option's: its default, else its annotation's (int -> 0, ...)."""
    if default is not inspect.Parameter.empty and default is not None:
        return default
    origin = typing.get_origin(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
        origin = typing.get_origin(hint)
    for kind, stand_in in ((bool, False), (int, 0), (float, 0.0), (str, "")):
        if hint is kind:
            return stand_in
    if hint in (tuple, list) or origin in (tuple, list, typing.Sequence):
        return ()
    return None


def resolve_user_options(user: UserModel, options: dict[str, Any] | None) -> dict[str, Any]:
    """Check and type `--set` options against the builder's signature (defaults or annotations)."""
    params, hints = builder_options(user.builder), type_hints(user.builder)
    resolved: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in params and takes_any_keyword(user.builder):
            resolved[key] = parse_value(value) if isinstance(value, str) else value  # into its **kwargs, untyped
            continue
        if key not in params:
            hint = difflib.get_close_matches(key, list(params), n=2)
            extra = f" Did you mean: {', '.join(hint)}?" if hint else ""
            raise UsageError(f"model {user.spec} has no option {key!r}.{extra} Its options: {', '.join(params) or '(none)'}.")
        hint, default = hints.get(key), params[key].default
        nullable = hint is None or default is None or type(None) in typing.get_args(hint)
        resolved[key] = coerce_option(user.spec, key, value, _typed_default(default, hint), nullable)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in resolved]
    if missing:
        raise UsageError(f"model {user.spec} needs a value for {', '.join(missing)}: pass --set {missing[0]}=...")
    return resolved


def user_defaults(user: UserModel) -> dict[str, Any]:
    """Every option the builder has a default for, with that default (recorded so a run rebuilds as trained)."""
    return {n: p.default for n, p in builder_options(user.builder).items() if p.default is not inspect.Parameter.empty}


def build_user_model(user: UserModel, options: dict[str, Any], *, in_channels: int, image_size: int,
                     num_classes: int) -> nn.Module:
    """Call the user's builder with its options and the data arguments it accepts; it must return a module."""
    data = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    kwargs = {**options, **{k: v for k, v in data.items() if accepts(user.builder, k)}}
    try:
        model = user.builder(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's constructor may raise anything
        raise UsageError(f"model {user.spec} could not be built with {options}: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"model {user.spec} returned a {type(model).__name__}, not an nn.Module")
    return model
