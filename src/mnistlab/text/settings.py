"""The settings of a text run: its own (TextSettings) and the training ones it takes from TrainConfig."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.config import GLOBAL_DEFAULTS, TrainConfig, class_weights_setting, validate
from mnistlab.errors import UsageError


@dataclass
class TextSettings:
    """The text-specific settings of a run (written to config.yaml beside the TrainConfig fields)."""

    data: str = "builtin:sentiment"
    text_column: str = "text"
    label_column: str = "label"
    model: str = "lstm"  # rnn, lstm or gru
    bidirectional: bool = False
    embed_dim: int = 64
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    max_len: int = 200  # tokens kept per text (the first ones)
    vocab_size: int = 20_000  # including <pad> and <unk>
    min_freq: int = 1
    test_fraction: float = 0.2


# Training defaults for text runs where the caller sets nothing: small data, small batches.
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10, "batch_size": 32, "lr": 3e-3, "optimizer": "adam", "clip_grad": 1.0,
}
TEXT_KEYS = frozenset(f.name for f in dataclasses.fields(TextSettings))
TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def resolve_text(settings: TextSettings, cfg: TrainConfig) -> TrainConfig:
    """Fill the TrainConfig's Nones (text defaults, then global ones) and validate, without the image model registry."""
    values = dataclasses.asdict(cfg)
    for key, default in {**GLOBAL_DEFAULTS, **TEXT_TRAIN_DEFAULTS}.items():
        if values.get(key) is None:
            values[key] = TEXT_TRAIN_DEFAULTS.get(key, default)
    values["betas"] = tuple(float(b) for b in values["betas"])
    values.update(model=settings.model, dataset=settings.data, model_options={},
                  class_weights=class_weights_setting(values["class_weights"]))
    resolved = TrainConfig(**values)
    validate(resolved)
    if resolved.tta:
        raise UsageError("tta averages over shifted copies of images: text runs have none to shift")
    if resolved.augment:  # validate() already refused rotate/zoom without it
        raise UsageError("augment (and rotate, zoom) shift and turn images: text runs have none (was silently ignored)")
    if not 0 <= settings.test_fraction < 1:
        raise UsageError(f"bad test-fraction {settings.test_fraction!r}: must be in [0, 1)")
    for name in ("max_len", "min_freq", "vocab_size"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "vocab_size" else 1):
            raise UsageError(f"bad {name.replace('_', '-')} {value!r}: expected a larger whole number")
    return resolved


def absolute_data(data: str) -> str:
    """A relative CSV path stored absolute, so evaluate/predict work from any directory."""
    return data if data.startswith("builtin:") else str(Path(data).expanduser().resolve())
