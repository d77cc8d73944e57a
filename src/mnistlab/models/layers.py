"""Layers the zoo shares: drop-in replacements for torch layers that are slow on CPU."""

from __future__ import annotations

import math

import torch
from torch import nn

# Keep-mask resolution: one 16-bit lane per element, so p is rounded to a multiple of 1/65536.
_LANE_VALUES = 1 << 16
_LANES_PER_WORD = 4  # 16-bit lanes in one 64-bit random word


def cpu_dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A dropout mask: 0 with probability p, 1/(1-p) otherwise (p rounded to 1/65536).

    Built from full-range 64-bit words of torch's own generator, split into four 16-bit lanes,
    one lane per element: the draw is as seeded and as resumable as `bernoulli_`, and one
    64-bit draw serves four elements.
    """
    n = math.prod(shape)
    words = torch.empty((n + _LANES_PER_WORD - 1) // _LANES_PER_WORD, dtype=torch.int64, device=device)
    # from=-2**63, to=None is torch's full 64-bit range: every bit uniform. (A bare random_()
    # draws from [0, 2**63), which would leave the top lane never negative.)
    words.random_(-(2**63), None)
    lanes = words.view(torch.int16)[:n].view(shape)  # each lane uniform on [-32768, 32767]
    threshold = round(p * _LANE_VALUES) - _LANE_VALUES // 2  # P(lane < threshold) = p
    mask = torch.empty(shape, dtype=dtype, device=device)
    # Compare straight into the float mask: one pass instead of a bool tensor and a cast.
    torch.ge(lanes, threshold, out=mask)
    return mask.mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """`nn.Dropout` with a cheaper random mask on CPU; same module name, options and state.

    torch's CPU dropout draws its mask with `bernoulli_`, one serial generator call per
    element: in the profiler, 29% of the DNN tutorial network's whole training step at batch
    256 (`python benchmarks/probe_step.py dnn`). `cpu_dropout_mask` makes the same Bernoulli(1 - p) keep mask (up to p rounded
    to 1/65536) from a quarter of the generator calls. Other devices, p = 0 or 1, in-place use
    and eval mode keep torch's own path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or self.inplace or not 0.0 < self.p < 1.0:
            return super().forward(x)
        return x * cpu_dropout_mask(x.shape, self.p, x.dtype, x.device)


def no_dropout() -> nn.Module:
    """What a builder puts where its dropout layer goes when the dropout option is None (no dropout).

    An `nn.Identity` in the dropout's place keeps the positions of the layers after it, so the
    state-dict keys are those of the default build: checkpoints written while an option given as
    None still got its default (dropout on; they recorded the None) load into it, and evaluate the same.
    """
    return nn.Identity()
