"""`--ema DECAY`: an exponential moving average of the weights, which validates and tests the run.

After every optimizer step (a hook on the optimizer: the loop itself is unchanged) the average
moves towards the weights, `avg = d * avg + (1 - d) * w`, with `d = min(DECAY, (1 + t) / (10 + t))`
at the t-th step: the short warm-up keeps the average from clinging to the initial weights in a
short run. Buffers (BatchNorm's running statistics) are copied, not averaged.

The trainer validates `trainer.eval_model`, which this callback sets to the average; the checkpoint
keeps the raw weights in `state_dict` (what resume loads and trains on) and the average beside them
under `ema`, so both resume exactly, and evaluate, predict, export and serve use the average
(mnistlab.training.checkpoint.eval_state_dict). Under torchrun every rank keeps its own copy: the
ranks' weights are the same after each step, so are their averages.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from mnistlab.errors import UsageError
from mnistlab.training.callbacks.base import Callback
from mnistlab.training.checkpoint import EMA_KEY, load_model_state
from mnistlab.training.state import FitState


class EMA(Callback):
    """Keeps the average of `trainer.model`'s weights and makes it `trainer.eval_model`."""

    state_key = EMA_KEY
    main_only = False  # every rank validates its shard with the average

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise UsageError(f"bad ema decay {decay!r}: a number between 0 and 1, like 0.999")
        self.decay = float(decay)
        self.updates = 0  # a Python int, not a tensor: reading it back never waits for the device
        self.model: nn.Module | None = None
        self._saved: dict[str, Any] | None = None
        self._handle: Any = None
        self._avg: list[torch.Tensor] = []
        self._raw: list[torch.Tensor] = []
        self._avg_buffers: list[torch.Tensor] = []
        self._raw_buffers: list[torch.Tensor] = []

    def on_fit_start(self, trainer: Any, state: FitState) -> None:
        source: nn.Module = trainer.model
        self.model = copy.deepcopy(source)
        self.model.requires_grad_(False)
        if self._saved is not None:  # resumed: the average as the checkpoint kept it
            load_model_state(self.model, self._saved["state_dict"], "the checkpoint's average (ema)")
            self.updates = int(self._saved.get("updates", 0))
        self._avg = [p.detach() for p in self.model.parameters()]
        self._raw = [p.detach() for p in source.parameters()]
        self._avg_buffers = [b for b in self.model.buffers()]
        self._raw_buffers = [b for b in source.buffers()]
        self._handle = trainer.optimizer.register_step_post_hook(self._update)
        trainer.eval_model = self.model

    @torch.no_grad()
    def _update(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.updates += 1
        t = self.updates
        decay = min(self.decay, (1 + t) / (10 + t))
        torch._foreach_lerp_(self._avg, self._raw, 1.0 - decay)
        for avg, raw in zip(self._avg_buffers, self._raw_buffers):
            avg.copy_(raw)

    def on_fit_end(self, trainer: Any, state: FitState) -> None:
        self._remove()

    def on_exception(self, trainer: Any, state: FitState) -> None:
        self._remove()

    def _remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            return {}
        return {"decay": self.decay, "updates": self.updates, "state_dict": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._saved = dict(state)
