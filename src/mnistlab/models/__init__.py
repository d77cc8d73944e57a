"""The model zoo. Importing this package registers every model.

Example:
    >>> from mnistlab.models import create_model, list_models
    >>> "lstm" in list_models()
    True
    >>> model = create_model("dnn", hidden_dims=(784, 128, 128, 128))
"""

from __future__ import annotations

# Importing each module runs its @register_model decorators; the import order is the order
# `mnistlab models` lists them in (simplest first), so keep isort away from it.
# isort: off
from mnistlab.models import linear  # noqa: F401
from mnistlab.models import cnn  # noqa: F401
from mnistlab.models import rnn  # noqa: F401
from mnistlab.models import fast  # noqa: F401

# isort: on
from mnistlab.models.init import INIT_METHODS, init_weights
from mnistlab.models.registry import (
    DATA_ARGS,
    ModelInfo,
    count_parameters,
    create_model,
    get_model_info,
    list_models,
    parse_set_flags,
    parse_value,
    register_model,
    resolve_options,
)
from mnistlab.models.summary import summarize

__all__ = [
    "DATA_ARGS",
    "INIT_METHODS",
    "ModelInfo",
    "count_parameters",
    "create_model",
    "get_model_info",
    "init_weights",
    "list_models",
    "parse_set_flags",
    "parse_value",
    "register_model",
    "resolve_options",
    "summarize",
]
