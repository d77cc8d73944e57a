"""mnistlab: train, evaluate and compare classic neural networks on MNIST-family data.

The public API is imported lazily so that `mnistlab --help` never imports torch.

Example:
    >>> import mnistlab
    >>> run = mnistlab.train(mnistlab.TrainConfig(model="fast", epochs=1))   # doctest: +SKIP
    >>> mnistlab.evaluate(run)["accuracy"]                                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access (PEP 562).
_LAZY = {
    "TrainConfig": "mnistlab.config",
    "train": "mnistlab.training.engine",
    "Run": "mnistlab.runs",
    "load_run": "mnistlab.runs",
    "evaluate": "mnistlab.evaluation",
    "create_model": "mnistlab.models",
    "list_models": "mnistlab.models",
    "load_dataset": "mnistlab.data",
    "MnistlabError": "mnistlab.errors",
    "Callback": "mnistlab.training.callbacks",
    "MlflowTracker": "mnistlab.training.callbacks",
    "fit": "mnistlab.fitting",
    "load_model": "mnistlab.fitting",
    "compare": "mnistlab.compare",
    "lr_find": "mnistlab.training.lr_finder",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
