"""The named choices of a training config (a leaf module: the config and the models both read it)."""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta", "rmsprop")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
INIT_METHODS = ("default", "gaussian", "xavier", "kaiming", "zeros")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "bf16", "off")
PROGRESS_MODES = ("bar", "quiet", "jsonl")
MONITORS = ("valid_loss", "valid_accuracy")  # what picks the best epoch (--monitor)
