"""Weight initialisation schemes, selectable with `--init` (see `INIT_METHODS`)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mnistlab.choices import INIT_METHODS
from mnistlab.errors import UsageError

__all__ = ["INIT_METHODS", "init_weights"]

# Layers whose `weight` (and `bias`) an init method rewrites. Normalisation layers keep
# their identity init (weight 1, bias 0): re-initialising them only hurts.
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)

ZEROS_WARNING = (
    "init 'zeros' sets every weight to zero: all units in a layer then get identical gradients, "
    "so symmetry is never broken and the network cannot learn more than a constant-per-layer model"
)


def _init_tensor(weight: torch.Tensor, method: str) -> None:
    """Fill one weight matrix in place according to `method` (not 'default')."""
    if method == "gaussian":
        nn.init.normal_(weight, mean=0.0, std=0.01)
    elif method == "xavier":
        nn.init.xavier_normal_(weight)
    elif method == "kaiming":
        nn.init.kaiming_normal_(weight, nonlinearity="relu")
    elif method == "zeros":
        nn.init.zeros_(weight)


@torch.no_grad()
def init_weights(model: nn.Module, method: str) -> None:
    """Re-initialise the Linear, Conv and recurrent weights of `model` in place.

    Methods:
        default: keep PyTorch's own initialisation (does nothing).
        gaussian: weights ~ Normal(mean 0, std 0.01) via `torch.nn.init.normal_`, as in the tutorials.
        xavier: `xavier_normal_` (Glorot), std = sqrt(2 / (fan_in + fan_out)).
        kaiming: `kaiming_normal_` for ReLU, std = sqrt(2 / fan_in).
        zeros: all weights zero; warns, because zero weights cannot break symmetry.

    For every method but `default`, the biases of those layers are set to zero. Recurrent
    layers (RNN/LSTM/GRU) get the same treatment for each `weight_ih_l*` / `weight_hh_l*`
    matrix and their biases.

    Raises:
        UsageError: for an unknown method.
    """
    if method not in INIT_METHODS:
        raise UsageError(f"unknown init method {method!r}: choose one of {', '.join(INIT_METHODS)}")
    if method == "default":
        return
    if method == "zeros":
        warnings.warn(ZEROS_WARNING, UserWarning, stacklevel=2)
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            _init_tensor(module.weight, method)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _RECURRENT):
            for name, param in module.named_parameters():
                if name.startswith("weight_"):
                    _init_tensor(param, method)
                elif name.startswith("bias_"):
                    nn.init.zeros_(param)
