"""A text summary of a model: layers, output shapes and parameter counts (via torchinfo)."""

from __future__ import annotations

from typing import Sequence

from torch import nn


def summarize(model: nn.Module, input_size: Sequence[int], depth: int = 3) -> str:
    """Return torchinfo's table for `model` on inputs of `input_size`.

    Args:
        model: the network; it is run once on zeros in eval mode and left in the mode it was in.
        input_size: (C, H, W) or (B, C, H, W); a batch of 2 is used when none is given.
        depth: how many levels of nested modules to show.

    Returns:
        The table as text, with the output size and parameter count of each layer and
        the totals ("Total params: ...").
    """
    import torchinfo  # lazily: only `mnistlab models --summary` and friends need it

    size = tuple(int(s) for s in input_size)
    if len(size) == 3:
        size = (2, *size)  # batch of 2: BatchNorm layers reject a batch of 1 in training mode
    stats = torchinfo.summary(
        model,
        input_size=size,
        col_names=("output_size", "num_params"),
        depth=depth,
        mode="eval",
        verbose=0,
    )
    # torchinfo 1.8 prints its unit enum's repr on Python 3.11 ("(Units.MEGABYTES)"); tidy it.
    return str(stats).replace("(Units.", "(")
