"""Fully connected models: logistic regression, the classic sigmoid MLP and a deep MLP."""

from __future__ import annotations

from torch import nn

from mnistlab.errors import UsageError
from mnistlab.models.layers import Dropout, no_dropout
from mnistlab.models.registry import register_model

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, sigmoid, tanh, gelu); UsageError otherwise."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise UsageError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}") from None


@register_model(
    "logistic",
    description="Multinomial logistic regression: one Linear layer on the flattened image",
    recipe={"optimizer": "sgd", "lr": 0.1, "batch_size": 100, "epochs": 10, "channels_last": False},
)
def logistic(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """Flatten -> Linear(C*H*W, num_classes). 7,850 parameters on MNIST."""
    return nn.Sequential(
        nn.Flatten(),  # [B, C, H, W] -> [B, C*H*W]; reshapes, so channels_last inputs work too
        nn.Linear(in_channels * image_size * image_size, num_classes),
    )


@register_model(
    "mlp",
    description="784-20-10 sigmoid MLP (the classic tutorial network)",
    recipe={"optimizer": "sgd", "lr": 0.1, "batch_size": 100, "epochs": 17, "channels_last": False},
)
def mlp(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    hidden_size: int = 20,
    activation: str = "sigmoid",
) -> nn.Module:
    """Flatten -> Linear(C*H*W, hidden_size) -> activation -> Linear(hidden_size, num_classes)."""
    if hidden_size < 1:
        raise UsageError(f"mlp hidden_size must be >= 1, got {hidden_size}")
    return nn.Sequential(
        nn.Flatten(),  # [B, C, H, W] -> [B, C*H*W]
        nn.Linear(in_channels * image_size * image_size, hidden_size),
        make_activation(activation),
        nn.Linear(hidden_size, num_classes),
    )


@register_model(
    "dnn",
    description="Deep MLP 784-512-256-128-10 with BatchNorm, ReLU and Dropout (the DNN tutorial's network)",
    recipe={
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 32,
        "epochs": 100,
        "patience": 3,
        "init": "kaiming",
        "channels_last": False,
    },
)
def dnn(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    hidden_dims: tuple[int, ...] = (784, 512, 256, 128),
    batchnorm: bool = True,
    dropout: bool | None = True,
    activation: str = "relu",
    dropout_ratio: float | None = 0.2,
) -> nn.Module:
    """Blocks of Linear -> [BatchNorm1d] -> activation -> [Dropout], then Linear -> num_classes.

    `hidden_dims[0]` is the input size, as the tutorial writes it, so it must equal C*H*W;
    the remaining entries are the hidden layer widths. `dropout=None` or `dropout_ratio=None`
    (`--set dropout=none`) is no dropout, like `dropout=False`.
    """
    in_features = in_channels * image_size * image_size
    dims = tuple(hidden_dims)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise UsageError(f"dnn hidden_dims must be positive whole numbers, got {hidden_dims!r}")
    if dims[0] != in_features:
        fixed = ",".join(str(d) for d in (in_features, *dims[1:]))
        raise UsageError(
            f"dnn hidden_dims starts with the input size, which is {in_channels}x{image_size}x{image_size}"
            f" = {in_features} for this dataset, not {dims[0]}: use --set hidden_dims={fixed}"
        )
    if dropout_ratio is not None and not 0.0 <= dropout_ratio < 1.0:
        raise UsageError(f"dnn dropout_ratio must be in [0, 1), got {dropout_ratio}")
    make_activation(activation)  # validate the name before building anything
    layers: list[nn.Module] = [nn.Flatten()]  # [B, C, H, W] -> [B, C*H*W]
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers.append(nn.Linear(d_in, d_out))
        if batchnorm:
            layers.append(nn.BatchNorm1d(d_out))
        layers.append(make_activation(activation))
        if dropout is None or dropout_ratio is None:
            layers.append(no_dropout())
        elif dropout and dropout_ratio > 0:
            layers.append(Dropout(dropout_ratio))
    layers.append(nn.Linear(dims[-1], num_classes))
    return nn.Sequential(*layers)
