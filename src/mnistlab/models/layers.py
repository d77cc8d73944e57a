"""Layers the zoo shares: drop-in replacements for torch layers that are slow on CPU."""

from __future__ import annotations

import math

import torch
from torch import nn

# Keep-mask resolution: one 16-bit lane per element, so p is rounded to a multiple of 1/65536.
_LANE_VALUES = 1 << 16
_LANES_PER_WORD = 4  # 16-bit lanes in one 64-bit random word
# The lanes stand in for p only where that rounding (at most 2**-17) moves neither p nor 1 - p
# by more than 0.2%; beyond (p under 2**-8 or over 1 - 2**-8, up to 1) torch's own draw is used.
_MIN_LANE_P = 2.0**-8


def lanes_represent(p: float) -> bool:
    """Whether the 16-bit lanes of `cpu_dropout_mask` draw p (and 1 - p) to within 0.2%."""
    return _MIN_LANE_P <= p <= 1.0 - _MIN_LANE_P


def cpu_dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A dropout mask: 0 with probability p, 1/(1-p) otherwise, for any p in [0, 1].

    Built from full-range 64-bit words of torch's own generator, split into four 16-bit lanes,
    one lane per element: the draw is as seeded and as resumable as `bernoulli_`, and one
    64-bit draw serves four elements. The lanes draw p rounded to 1/65536, and the kept
    elements are scaled by that p's 1/(1-p), so the mask's mean stays 1. Where the lanes
    cannot represent p (see `lanes_represent`) the mask is drawn with `bernoulli_`.
    """
    if not lanes_represent(p):
        if p >= 1.0:
            return torch.zeros(shape, dtype=dtype, device=device)
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - p).div_(1.0 - p)
    n = math.prod(shape)
    words = torch.empty((n + _LANES_PER_WORD - 1) // _LANES_PER_WORD, dtype=torch.int64, device=device)
    # from=-2**63, to=None is torch's full 64-bit range: every bit uniform. (A bare random_()
    # draws from [0, 2**63), which would leave the top lane never negative.)
    words.random_(-(2**63), None)
    lanes = words.view(torch.int16)[:n].view(shape)  # each lane uniform on [-32768, 32767]
    drop_values = round(p * _LANE_VALUES)  # in [256, 65280]: the threshold below fits in int16
    threshold = drop_values - _LANE_VALUES // 2  # P(lane < threshold) = drop_values / 65536
    mask = torch.empty(shape, dtype=dtype, device=device)
    # Compare straight into the float mask: one pass instead of a bool tensor and a cast.
    torch.ge(lanes, threshold, out=mask)
    return mask.mul_(_LANE_VALUES / (_LANE_VALUES - drop_values))  # 1 / (1 - the p drawn)


class Dropout(nn.Dropout):
    """`nn.Dropout` with a cheaper random mask on CPU; same module name, options and state.

    torch's CPU dropout draws its mask with `bernoulli_`, one serial generator call per
    element: in the profiler, 29% of the DNN tutorial network's whole training step at batch
    256 (`python benchmarks/probe_step.py dnn`). `cpu_dropout_mask` makes the same Bernoulli(1 - p) keep mask (up to p rounded
    to 1/65536) from a quarter of the generator calls. Other devices, p that the 16-bit lanes
    cannot represent (under 2**-8 or above 1 - 2**-8, p = 0 and 1 included), in-place use and
    eval mode keep torch's own path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or self.inplace or not lanes_represent(self.p):
            return super().forward(x)
        return x * cpu_dropout_mask(x.shape, self.p, x.dtype, x.device)
