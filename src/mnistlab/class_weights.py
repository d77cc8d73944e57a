"""Per-class weights of the training loss (`--class-weights balanced|FILE.json`) and the imbalance warning.

`balanced` weighs class k by n / (K * n_k), n_k its images in the training split (scikit-learn's
"balanced"): every class then carries the same total weight in an epoch. A file gives the weights
itself: a JSON list of K numbers in class order, or a mapping {class name: weight} (classes left
out weigh 1). The weights apply to the training loss only; valid_loss and the test loss stay the
plain mean, so they compare with runs trained without weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from mnistlab.errors import UsageError

# More images in the largest class than this many times the smallest: a warning says so.
IMBALANCE_RATIO = 3.0
# The loss weighs in float32: a larger weight (1e300 is finite in JSON) would be inf, the first loss NaN.
MAX_WEIGHT = 1e30


def imbalance(counts: Sequence[int], classes: Sequence[str]) -> str | None:
    """A sentence naming the largest and smallest class when their ratio is over IMBALANCE_RATIO, else None."""
    if len(counts) < 2:
        return None
    big = max(range(len(counts)), key=lambda k: counts[k])
    small = min(range(len(counts)), key=lambda k: counts[k])
    if counts[small] * IMBALANCE_RATIO >= counts[big]:
        return None
    ratio = "no images" if counts[small] == 0 else f"{counts[big] / counts[small]:.1f}:1"
    return (f"the classes are imbalanced: {classes[big]!r} has {counts[big]:,} training images, {classes[small]!r} "
            f"{counts[small]:,} ({ratio}, over {IMBALANCE_RATIO:g}:1)")


def imbalance_advice(counts: Sequence[int]) -> str:
    """What to do about an imbalance: class weights, or, for a class without training images, images."""
    if 0 in counts:
        return "no class weight teaches a class the training split lacks: add training images of it"
    return "--class-weights balanced weighs the loss against it"


def balanced_weights(counts: Sequence[int]) -> list[float]:
    """n / (K * n_k) per class; a class with no training images weighs 0 (it never appears in the loss)."""
    n, k = sum(counts), len(counts)
    return [n / (k * c) if c else 0.0 for c in counts]


def read_weights_file(path: str | Path, classes: Sequence[str]) -> list[float]:
    """The weights a JSON file gives: a list in class order, or {class name: weight} (others weigh 1)."""
    p = Path(path)
    try:
        data: Any = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the class weights file {p}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"the class weights file {p} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        unknown = [str(key) for key in data if str(key) not in classes]
        if unknown:
            raise UsageError(f"the class weights file {p} names classes the data does not have: "
                             f"{', '.join(unknown[:5])} (its classes: {', '.join(classes)})")
        data = [data.get(name, 1.0) for name in classes]
    if not isinstance(data, list) or len(data) != len(classes):
        raise UsageError(f"the class weights file {p} must hold a list of {len(classes)} numbers (one per class, "
                         f"in the order {', '.join(classes[:10])}) or a {{class: weight}} mapping")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w <= MAX_WEIGHT for w in data):
        raise UsageError(f"the class weights in {p} must be finite numbers >= 0 and <= {MAX_WEIGHT:g}")
    if not any(data):
        raise UsageError(f"the class weights in {p} are all 0: nothing would be learned")
    return [float(w) for w in data]


def loss_weights(setting: str | None, counts: Sequence[int], classes: Sequence[str]) -> list[float] | None:
    """The per-class weights `setting` (a config's class_weights) means for these training counts; None: none."""
    if setting is None:
        return None
    if setting == "balanced":
        return balanced_weights(counts)
    return read_weights_file(setting, classes)
