"""Test-time augmentation (`--tta`): the softmax averaged over an image and copies of it shifted by one pixel.

The views are the image itself and its shifts by 1 px up, down, left and right (zero fill: black,
the background of MNIST-style images, for raw uint8 pixels and for [0, 1] floats alike). Digits
are never flipped: a mirrored 2 or 7 is no digit. Colour images (3 channels, as `--augment`
decides in mnistlab.data.augment) also get their horizontal mirror, as photos do in training. The result is returned as log-probabilities, which
are logits like any other (their softmax is the averaged probabilities), so argmax, the loss and
AUC are computed from them unchanged.

`mnistlab.scoring.predict_logits` (train's test pass, `evaluate`) and
`mnistlab.predict.Predictor` (`predict`) both call `averaged_logits`: one implementation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F

SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (dy, dx): down, up, right, left


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images [B, C, H, W] moved by dy rows (down if positive) and dx columns (right), zero fill."""
    h, w = images.shape[-2:]
    m = max(abs(dy), abs(dx))
    padded = F.pad(images, (m, m, m, m))
    return padded[..., m - dy : m - dy + h, m - dx : m - dx + w]


def view_count(channels: int) -> int:
    """How many views TTA averages over for images of `channels` channels (colour adds the mirror)."""
    return len(SHIFTS) + (channels == 3)


def views(images: torch.Tensor) -> list[torch.Tensor]:
    """The views TTA averages over: the shifts in SHIFTS, and for colour images also the mirror image."""
    out = [images if (dy, dx) == (0, 0) else shifted(images, dy, dx) for dy, dx in SHIFTS]
    return out + [images.flip(-1)] if images.shape[1] == 3 else out


def averaged_logits(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """log(mean softmax) of `forward` over `views(images)`; `forward` maps un-normalised images to logits."""
    total, seen = None, views(images)
    for view in seen:
        probs = torch.softmax(forward(view).float(), dim=1)
        total = probs if total is None else total.add_(probs)
    # Clamped: a class every view gives probability 0 would otherwise be -inf, and its loss infinite.
    return total.div_(len(seen)).clamp_min_(torch.finfo(torch.float32).tiny).log_()
