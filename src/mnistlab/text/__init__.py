"""Text classification: tokenize, build a vocabulary, train a recurrent classifier on a labelled CSV.

Example:
    >>> from mnistlab.text import train_text, predict_text, cosine_similarity   # doctest: +SKIP
    >>> run = train_text("builtin:sentiment", model="gru", epochs=8)             # doctest: +SKIP
    >>> predict_text(run, ["이 영화 정말 재미있어요"])[0]["label"]                  # doctest: +SKIP

Only the tokenizer and vocabulary are imported eagerly (no torch); the rest loads on use.
"""

from __future__ import annotations

from typing import Any

from mnistlab.text.tokenizer import tokenize
from mnistlab.text.vocab import Vocab

_LAZY = {
    "train_text": "mnistlab.text.engine",
    "predict_text": "mnistlab.text.engine",
    "evaluate_text": "mnistlab.text.engine",
    "cosine_similarity": "mnistlab.text.engine",
    "load_text_run": "mnistlab.text.engine",
    "read_text_csv": "mnistlab.text.csvdata",
}

__all__ = ["tokenize", "Vocab", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnistlab.text' has no attribute {name!r}")
