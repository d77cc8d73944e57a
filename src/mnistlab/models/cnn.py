"""Classic convolutional networks from the PyTorch tutorials."""

from __future__ import annotations

from torch import nn

from mnistlab.errors import UsageError
from mnistlab.models.layers import Dropout, no_dropout
from mnistlab.models.registry import register_model


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a convolution or pooling layer (floor division, as PyTorch does)."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_size(name: str, size: int, image_size: int) -> None:
    if size < 1:
        raise UsageError(f"{name} cannot handle {image_size}x{image_size} images: the feature map shrinks to nothing")


@register_model(
    "cnn-strided",
    description="Three strided 3x3 convolutions and global average pooling (the 'torch.nn from scratch' CNN)",
    recipe={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 64, "epochs": 5},
)
def cnn_strided(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """Conv(C,16,3,s2) ReLU, Conv(16,16,3,s2) ReLU, Conv(16,classes,3,s2) ReLU, AdaptiveAvgPool -> logits.

    The final ReLU is the tutorial's: it clips logits at zero, which still trains fine.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, num_classes, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # [B, classes, 1, 1] -> [B, classes]
    )


@register_model(
    "cnn-basic",
    description="Three 5x5 convolutions with max pooling and a 100-unit hidden layer (a basic tutorial CNN)",
    recipe={"optimizer": "adam", "lr": 2e-4, "batch_size": 100, "epochs": 10},
)
def cnn_basic(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """conv5 C->16, conv5 16->32, pool, conv5 32->64, pool, Linear(64*s*s, 100), Linear(100, classes)."""
    s = image_size
    s = conv_out(s, 5)  # 28 -> 24
    s = conv_out(s, 5)  # 24 -> 20
    s = s // 2  # 20 -> 10
    s = conv_out(s, 5)  # 10 -> 6
    s = s // 2  # 6 -> 3
    _check_size("cnn-basic", s, image_size)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, kernel_size=5),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),  # [B, 64, s, s] -> [B, 64*s*s] (576 on MNIST); works for any batch size
        nn.Linear(64 * s * s, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )


@register_model(
    "cnn-bn",
    description="Three Conv3x3-BatchNorm-ReLU-MaxPool blocks (32/64/128) and a dropout MLP head",
    recipe={"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "epochs": 10, "scheduler": "cosine"},
)
def cnn_bn(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    channels: tuple[int, ...] = (32, 64, 128),
    hidden: tuple[int, ...] = (512, 128),
    dropout: float | None = 0.5,
) -> nn.Module:
    """Blocks Conv3x3(pad 1) -> BatchNorm2d -> ReLU -> MaxPool2, one per entry of `channels`.

    Classifier: Dropout -> Linear(last*s*s, hidden[0]) -> ReLU -> Dropout -> Linear(hidden[0], hidden[1])
    -> ReLU -> Linear(hidden[-1], classes); dropout is applied before the first two Linear layers.
    `dropout=None` (`--set dropout=none`) is no dropout, like 0.
    """
    if not channels or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise UsageError(f"cnn-bn channels must be positive whole numbers, got {channels!r}")
    if not all(isinstance(h, int) and h >= 1 for h in hidden):
        raise UsageError(f"cnn-bn hidden must be positive whole numbers, got {hidden!r}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise UsageError(f"cnn-bn dropout must be in [0, 1), got {dropout}")
    layers: list[nn.Module] = []
    c_in, s = in_channels, image_size
    for c_out in channels:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, s = c_out, s // 2  # 28 -> 14 -> 7 -> 3; 32 -> 16 -> 8 -> 4
    _check_size("cnn-bn", s, image_size)
    layers.append(nn.Flatten())  # [B, c, s, s] -> [B, c*s*s]
    f_in = c_in * s * s
    for i, f_out in enumerate(hidden):
        if i < 2 and dropout is None:
            layers.append(no_dropout())
        elif i < 2 and dropout > 0:  # the reference head drops out before its first two Linear layers
            layers.append(Dropout(dropout))
        layers += [nn.Linear(f_in, f_out), nn.ReLU()]
        f_in = f_out
    layers.append(nn.Linear(f_in, num_classes))
    return nn.Sequential(*layers)
