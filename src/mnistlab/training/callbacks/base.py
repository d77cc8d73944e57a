"""Callbacks: what the trainer does around the loop, each behaviour in its own object.

The trainer calls each hook as `hook(trainer, state)`, once per run or once per epoch, in
the order of the callback list (built-ins first, then the user's). There is no per-step hook:
the steps stay free of Python calls and device syncs.
"""

from __future__ import annotations

from typing import Any, Iterable

from mnistlab.errors import UsageError
from mnistlab.training.state import FitState

HOOKS = ("on_fit_start", "on_epoch_start", "on_validation_end", "on_epoch_end", "on_fit_end", "on_exception")

# Checkpoint entries the trainer itself writes: a callback's state_key may not reuse them.
CORE_KEYS = frozenset({
    "kind", "format_version", "model", "data", "state_dict", "optimizer", "scheduler", "rng", "rng_per_rank",
    "epoch", "history", "train_seconds", "total_seconds", "global_step", "steps_per_epoch", "mnistlab_version",
    "config", "class_weights",
})


class Callback:
    """Base class for code that runs around the training loop (`mnistlab.train(cfg, callbacks=[...])`).

    Hooks, in the order the trainer calls them (each as `hook(trainer, state)`):

    - `on_fit_start`: the run folder exists (config.yaml written); a resumed run has its
      checkpoint loaded. `state.epoch` is the last finished epoch (0 for a new run).
    - `on_epoch_start`: before epoch `state.epoch` trains.
    - `on_validation_end`: the epoch trained and was validated; `state.row` is its metrics.csv
      row (train_loss, train_accuracy, valid_loss, valid_accuracy, lr, train_seconds). Decide
      here: `state.stop(reason)` ends the run after this epoch with that stop_reason.
    - `on_epoch_end`: the epoch's checkpoint and metrics.csv are written; record things here
      (files, loggers). State changed now is saved with the next epoch's checkpoint.
    - `on_fit_end`: the test split was scored (`state.test`, `state.summary`); summary.json says completed.
    - `on_exception`: the run is ending with `state.error` (`state.status` is "failed" or
      "interrupted"); summary.json says so. Errors raised here are only warned about.

    `state_dict()` / `load_state_dict()` are saved in every checkpoint under `state_key` (default
    `callback:<class name>`) and restored on `--resume`. Under torchrun, callbacks run on rank 0 only
    (`main_only = True`), and must not call collectives.
    """

    state_key: str | None = None
    main_only: bool = True

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        """The run folder exists and training is about to start (or continue)."""

    def on_epoch_start(self, trainer: Any, state: FitState) -> None:
        """Epoch `state.epoch` is about to train."""

    def on_validation_end(self, trainer: Any, state: FitState) -> None:
        """Epoch `state.epoch` trained and was validated: `state.row` holds its numbers."""

    def on_epoch_end(self, trainer: Any, state: FitState) -> None:
        """The epoch's checkpoint and metrics.csv row are written."""

    def on_fit_end(self, trainer: Any, state: FitState) -> None:
        """The run completed and was tested."""

    def on_exception(self, trainer: Any, state: FitState) -> None:
        """The run is ending with `state.error`."""

    def state_dict(self) -> dict[str, Any]:
        """Plain values (numbers, strings, lists, dicts, tensors) to save in the checkpoint; {} saves nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict()` returned (called on resume, before `on_fit_start`)."""


def checkpoint_key(callback: Callback) -> str:
    return callback.state_key or f"callback:{type(callback).__qualname__}"


class CallbackList:
    """The callbacks of one run, called in order; on non-main ranks only those with main_only False."""

    def __init__(self, callbacks: Iterable[Callback], is_main: bool = True) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise UsageError(f"callbacks must be mnistlab.Callback instances, got {type(cb).__name__}")
        keys = [checkpoint_key(cb) for cb in self.callbacks]
        for key in keys:
            if keys.count(key) > 1:
                raise UsageError(f"two callbacks save their state as {key!r}: give each its own state_key")
        self.is_main = is_main

    def active(self) -> list[Callback]:
        return [cb for cb in self.callbacks if self.is_main or not cb.main_only]

    def call(self, hook: str, trainer: Any, state: FitState) -> None:
        for cb in self.active():
            getattr(cb, hook)(trainer, state)

    def call_safely(self, hook: str, trainer: Any, state: FitState, warn: Any) -> None:
        """Call every callback even if some raise (the run is already ending): errors become warnings."""
        for cb in self.active():
            try:
                getattr(cb, hook)(trainer, state)
            except Exception as exc:  # noqa: BLE001 - the original error is what the user must see
                warn(f"callback {type(cb).__name__}.{hook} failed: {exc}")

    def state_dicts(self) -> dict[str, Any]:
        """{state_key: state} of the callbacks that have state, for the checkpoint (plain values only)."""
        out = {}
        for cb in self.callbacks:
            key, state = checkpoint_key(cb), cb.state_dict()
            if state:
                if key in CORE_KEYS:
                    raise UsageError(f"callback {type(cb).__name__} uses the reserved checkpoint key {key!r}")
                _check_plain(state, f"callback {type(cb).__name__}'s state_dict()")
                out[key] = state
        return out

    def load_state_dicts(self, ckpt: dict[str, Any]) -> None:
        for cb in self.callbacks:
            key = checkpoint_key(cb)
            if key in ckpt and key not in CORE_KEYS:
                cb.load_state_dict(ckpt[key])


def _check_plain(value: Any, where: str) -> None:
    """Checkpoints load with weights_only=True: a state of other objects would make every one unloadable."""
    import torch

    # type(), not isinstance: numpy's float64 is a float subclass, yet weights_only refuses to load it.
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise UsageError(f"{where} has a key of type {type(key).__name__}: use str or int keys")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise UsageError(
        f"{where} holds a {type(value).__module__}.{type(value).__name__}: checkpoints keep plain values only "
        "(numbers, strings, lists, dicts, tensors); convert it (e.g. float(x), x.tolist())"
    )
