"""Our own tuned CNNs: `fast` (shortest time to 99% on a CPU) and `best` (highest accuracy)."""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.errors import UsageError
from mnistlab.models.cnn import conv_out
from mnistlab.models.layers import Dropout, no_dropout
from mnistlab.models.registry import register_model


class ToChannelsLastOrder(nn.Module):
    """[B, C, H, W] -> [B, H, W, C], so that the Flatten after it takes the features in NHWC order.

    For activations in channels_last memory (how `mnistlab train` runs conv models) this
    permute is free and the Flatten after it is a view; flattening in NCHW order instead
    copies the whole feature map, forward and backward (about 5% of a `fast` step).
    In NCHW memory it costs that same copy, no more.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


@register_model(
    "fast",
    description="Small strided CNN tuned for the shortest CPU time to 99% test accuracy (one-cycle Adam)",
    recipe={
        "optimizer": "adam",
        "lr": 1e-2,
        "betas": (0.7, 0.9),
        "scheduler": "onecycle",
        "pct_start": 0.3,
        # 0.9 epoch (190 steps of 256) with c1 = 16: 0.93x the time of c1 32 for 0.8 epoch, as
        # accurate (every seed >= 99.0%). Batch 128 was as accurate but about 1.45x slower on 2
        # threads, where the per-step cost dominates (docs/benchmarks.md, "what each change bought").
        "batch_size": 256,
        "epochs": 0.9,
        "label_smoothing": 0.2,
        "valid_fraction": 0.1,
        "patience": 0,
        "channels_last": True,
    },
)
def fast(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    c1: int = 16,
    c2: int = 32,
    hidden: int = 256,
) -> nn.Module:
    """conv5 s2 C->c1, ReLU, conv3 c1->c2, MaxPool2, ReLU, NHWC Flatten, Linear(s*s*c2, hidden), ReLU, Linear.

    The stride-2 first convolution quarters the work of everything after it, which is
    what makes this net fast on a CPU; ReLU after the pooling is the same function as
    before it, on a quarter of the values. c1 = 16 with the recipe's 0.9 epoch trains
    faster than c1 = 32 with 0.8 epoch at the same accuracy (see docs/benchmarks.md, where
    each tuning step is measured). The features are flattened in NHWC order (ToChannelsLastOrder);
    that module also shifts the Linear layers' state_dict keys, so a checkpoint of the
    older NCHW-flattening layout fails to load with a clear message instead of loading
    into a permuted layer.
    """
    if min(c1, c2, hidden) < 1:
        raise UsageError(f"fast needs c1, c2 and hidden >= 1, got {c1}, {c2}, {hidden}")
    s = conv_out(image_size, 5, stride=2)  # 28 -> 12
    s = conv_out(s, 3)  # 12 -> 10
    s = s // 2  # 10 -> 5
    if s < 1:
        raise UsageError(f"fast cannot handle {image_size}x{image_size} images: the feature map shrinks to nothing")
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel_size=5, stride=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, kernel_size=3),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        ToChannelsLastOrder(),
        nn.Flatten(),  # [B, s, s, c2] -> [B, s*s*c2] (800 on MNIST)
        nn.Linear(c2 * s * s, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm right after it has its own shift.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register_model(
    "best",
    description="VGG-style CNN with BatchNorm (32-64-128, ~288k params) for the highest accuracy",
    recipe={
        "optimizer": "adamw",
        "lr": 3e-3,
        "weight_decay": 5e-4,
        "scheduler": "onecycle",
        "batch_size": 128,
        "epochs": 12,
        "label_smoothing": 0.1,
        "augment": True,
        "rotate": 10.0,
        "zoom": 0.1,
        # No --ema: over 3 seeds the average of the weights tested 0.05 points below the raw weights
        # (docs/results.md, "best with the training tools").
        # Label smoothing keeps the valid cross-entropy falling only for the first epochs while the
        # accuracy rises to the last: picked by loss, best.pt was epoch 5 and 0.14 points less accurate.
        "monitor": "valid_accuracy",
        "valid_fraction": 0.1,
        "patience": 0,
        "channels_last": True,
    },
)
def best(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    width: int = 32,
    dropout: float | None = 0.3,
) -> nn.Module:
    """[conv3 w, BN, ReLU] x2, pool, [conv3 2w, BN, ReLU] x2, pool, [conv3 4w, BN, ReLU] x2, GAP, Dropout, Linear.

    Global average pooling keeps the head small (4w*classes weights) and makes the net
    work for any image size of at least 4x4. `dropout=None` (`--set dropout=none`) is no dropout.
    """
    if width < 1:
        raise UsageError(f"best needs width >= 1, got {width}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise UsageError(f"best dropout must be in [0, 1), got {dropout}")
    if image_size < 4:
        raise UsageError(f"best needs images of at least 4x4, got {image_size}x{image_size}")
    w = width
    return nn.Sequential(
        *_conv_bn_relu(in_channels, w),
        *_conv_bn_relu(w, w),
        nn.MaxPool2d(2),  # 28 -> 14
        *_conv_bn_relu(w, 2 * w),
        *_conv_bn_relu(2 * w, 2 * w),
        nn.MaxPool2d(2),  # 14 -> 7
        *_conv_bn_relu(2 * w, 4 * w),
        *_conv_bn_relu(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # [B, 4w, 1, 1] -> [B, 4w]
        no_dropout() if dropout is None else Dropout(dropout),
        nn.Linear(4 * w, num_classes),
    )
