"""Layers the zoo shares: drop-in replacements for torch layers that are slow on CPU."""

from __future__ import annotations

import math

import torch
from torch import nn

# Keep-mask resolution: one 16-bit lane per element, so p is rounded to a multiple of 1/65536.
_LANE_VALUES = 1 << 16
_LANES_PER_WORD = 4  # 16-bit lanes in one 64-bit random word
_ROUNDING = 0.5 / _LANE_VALUES  # the most that rounding to 1/65536 moves p


def lanes_represent(p: float) -> bool:
    """Whether the 16-bit lanes of `cpu_dropout_mask` draw p to within 0.2% and the keep
    probability 1 - p (and so the layer's mean) to within 0.01%: p in [2**-8, about 0.92].

    Outside (p near 0, p near 1 up to 1 itself) the rounding would change what is asked for:
    for p >= 1 - 2**-17 it would even round to 1, whose threshold does not fit the lanes.
    """
    return _ROUNDING <= 2e-3 * p and _ROUNDING <= 1e-4 * (1.0 - p)


def cpu_dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A dropout mask: 0 with probability p, 1/(1-p) otherwise, for any p in [0, 1].

    Built from full-range 64-bit words of torch's own generator, split into four 16-bit lanes,
    one lane per element: the draw is as seeded and as resumable as `bernoulli_`, and one
    64-bit draw serves four elements. The lanes draw p rounded to 1/65536, which is used only
    where that keeps the mask's mean within 0.01% of 1 (see `lanes_represent`); elsewhere the
    mask is drawn with `bernoulli_`. The scale is torch's 1/(1-p) either way.
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
    # P(lane < threshold) = p rounded to 1/65536; in range, the threshold fits in int16.
    threshold = round(p * _LANE_VALUES) - _LANE_VALUES // 2
    mask = torch.empty(shape, dtype=dtype, device=device)
    # Compare straight into the float mask: one pass instead of a bool tensor and a cast.
    torch.ge(lanes, threshold, out=mask)
    return mask.mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """`nn.Dropout` with a cheaper random mask on CPU; same module name, options and state.

    torch's CPU dropout draws its mask with `bernoulli_`, one serial generator call per
    element: in the profiler, 29% of the DNN tutorial network's whole training step at batch
    256 (`python benchmarks/probe_step.py dnn`). `cpu_dropout_mask` makes the same Bernoulli(1 - p) keep mask (up to p rounded
    to 1/65536) from a quarter of the generator calls. Other devices, p that the 16-bit lanes
    cannot represent closely enough (under 2**-8 or above about 0.92, p = 0 and 1 included),
    in-place use and eval mode keep torch's own path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or self.inplace or not lanes_represent(self.p):
            return super().forward(x)
        return x * cpu_dropout_mask(x.shape, self.p, x.dtype, x.device)


def no_dropout() -> nn.Module:
    """What a builder puts where its dropout layer goes when the dropout option is None (no dropout).

    An `nn.Identity` in the dropout's place keeps the positions of the layers after it, so the
    state-dict keys are those of the default build: checkpoints written while an option given as
    None still got its default (dropout on; they recorded the None) load into it, and evaluate the same.
    """
    return nn.Identity()
