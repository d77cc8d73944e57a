"""Checkpoints: plain state dicts and values only, written atomically, loaded with weights_only=True.

A checkpoint never holds a pickled object, so loading one from an untrusted source
cannot execute code: `torch.load(weights_only=True)` refuses anything but tensors,
numbers, strings and containers of them.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.errors import CheckpointError, MnistlabError

FORMAT_VERSION = 1
KIND = "mnistlab-checkpoint"
# The entry where a run trained with --ema keeps the average of its weights (beside the raw `state_dict`).
EMA_KEY = "ema"


class WriteError(MnistlabError, OSError):
    """A file could not be written (disk full, no permission); the message names it and the fix.

    Also an OSError, so code that catches OSError around writes keeps working.
    """

    def __init__(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free some disk space (or choose another --out) and run again; the previous file is unchanged"
        else:
            fix = "check that the folder exists and is writable; the previous file is unchanged"
        self.message = f"cannot write {path}: {reason}; {fix}"
        super().__init__(self.message)
        self.errno = exc.errno
        self.filename = str(path)

    def __str__(self) -> str:
        return self.message


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    from mnistlab.tmpfiles import create_temp

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not mkstemp: its files are 0600 whatever the umask, unreadable in a shared runs folder.
        fd, tmp = create_temp(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, MnistlabError):
            raise WriteError(path, exc) from None
        raise


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint dict atomically (adds the format marker)."""
    payload = {"kind": KIND, "format_version": FORMAT_VERSION, **payload}
    # Serialised in memory first: torch.save turns a failed write (a full disk) into an opaque
    # RuntimeError, while a plain write raises the OSError that names the cause.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getbuffer()
    atomic_write_bytes(Path(path), lambda fh: fh.write(data))


def link_or_copy(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s current content atomically (hard link, or copy where links fail)."""
    import shutil

    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    # rename() does nothing when tmp and dst already are links to the same file: tmp would stay.
    if os.path.lexists(tmp):
        os.unlink(tmp)


def save_training_checkpoint(folder: Path, payload: dict[str, Any], best: bool) -> None:
    """Write `folder/last.pt`, and make `folder/best.pt` the same file when this epoch is the best.

    last.pt is complete on disk before best.pt points at it, so a kill between the two
    leaves the previous best.pt intact (resume re-links it).
    """
    last = Path(folder) / "last.pt"
    save_checkpoint(last, payload)
    if best:
        link_or_copy(last, Path(folder) / "best.pt")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely; any problem is a CheckpointError with the file's name.

    Example:
        >>> ckpt = load_checkpoint("runs/fast/checkpoints/best.pt")   # doctest: +SKIP
        >>> ckpt["model"]["name"], ckpt["epoch"]                      # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refused to load {p}: it holds objects other than plain tensors and values "
            f"(unsafe to unpickle; {first[:160]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {str(exc).splitlines()[0][:200]} (is it truncated?)") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise CheckpointError(f"{p} is not an mnistlab checkpoint")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{p} was written by a newer mnistlab (format {ckpt['format_version']}); upgrade mnistlab")
    return ckpt


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly, turning key and shape mismatches into one clear message."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:3]))
        if missing:
            parts.append(f"missing {len(missing)} weights (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} weights (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"checkpoint {source} does not match model {type(model).__name__}: {', '.join(parts)}. "
            "Was it trained with another model or other --set options?"
        )
    model.load_state_dict(state_dict)


def eval_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint is evaluated with: the average of a run trained with --ema, else its weights.

    The one place that decides it: the test pass, evaluate, predict, export, serve and load_model all
    rebuild models through here (resume loads the raw `state_dict` to go on training).
    """
    ema = ckpt.get(EMA_KEY)
    if isinstance(ema, dict) and isinstance(ema.get("state_dict"), dict):
        return ema["state_dict"]
    return ckpt["state_dict"]


def build_model_from_checkpoint(
    ckpt: dict[str, Any], source: str = "checkpoint", *, code: Any = None, user: Any = None,
    model: nn.Module | None = None,
) -> nn.Module:
    """Rebuild the model described by a checkpoint and load its weights (eval mode, CPU).

    A zoo model is built by name. A model from a user's file is built only from code the caller
    passes: `code` (a usercode.ModelCode the user gave, checked against the recorded sha256) or
    `user` (a UserModel this process already loaded); the recorded file is never imported by
    itself. A model trained as a Python object (mnistlab.fit) needs a fresh instance: `model`.
    The weights are `eval_state_dict`'s: the average of a run trained with --ema.
    """
    from mnistlab.models import create_model
    from mnistlab.models.usercode import ModelCode, build_user_model, load_user_model, verify_code

    try:
        spec, data = ckpt["model"], ckpt["data"]
        shape = {"num_classes": len(data["classes"]), "in_channels": int(data["in_channels"]),
                 "image_size": int(data["image_size"])}
        if "object" in spec or model is not None:
            if model is None:
                raise MnistlabError(
                    f"{source} holds the weights of a Python object (class {spec['object']['class']}) trained with "
                    "mnistlab.fit: no command can rebuild it; load it with mnistlab.load_model(run, model=YourNet(...))"
                )
        elif "code" in spec:
            if user is None:
                path = verify_code(spec["code"], code or ModelCode(), source)
                user = load_user_model(f"{path}:{spec['code']['name']}")
            model = build_user_model(user, _known_options(user, spec.get("options", {})), **shape)
        else:
            model = create_model(spec["name"], **shape, **spec.get("options", {}))
        load_model_state(model, eval_state_dict(ckpt), source)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {source} lacks {exc}: not a complete mnistlab checkpoint") from None
    return model.eval()


def _known_options(user: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The recorded options the (possibly changed) file still takes: a removed option is dropped."""
    from mnistlab.models.usercode import builder_options, takes_any_keyword

    if takes_any_keyword(user.builder):
        return dict(options)  # its **kwargs took them when it trained
    known = builder_options(user.builder)
    return {k: v for k, v in options.items() if k in known}
