"""Which augmentation `--augment` means for a dataset: shifts for digits, crops and flips for colour.

Digits must not be mirrored (a flipped 2 is no 2), so one-channel data gets the random shifts
of up to 2 pixels it always had. Colour photos (CIFAR, a folder of pictures) get the standard
recipe instead: a random crop of the image zero-padded by 1/8 of its side (4 px at 32x32) and a
horizontal flip of half the images. Both are done by `BatchIterator` in the one gather that
makes each batch, drawn from the epoch's seeded generator, so a resumed run sees the same
augmented batches.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGIT_SHIFT = 2  # pixels


@dataclass(frozen=True)
class Augment:
    """Random translation by up to `max_shift` pixels (zero fill: a crop of the padded image), and
    horizontal flips of half the images when `flip`."""

    max_shift: int
    flip: bool = False


def augment_kind(augment: bool | None, channels: int, image_size: int) -> Augment | None:
    """The augmentation `--augment` picks for data of `channels` x `image_size` x `image_size` (None: off)."""
    if not augment:
        return None
    if channels == 1:
        return Augment(DIGIT_SHIFT)
    return Augment(max(1, round(image_size / 8)), flip=True)


def augment_text(kind: Augment | None) -> str:
    """How reports and the run's first line name it."""
    if kind is None:
        return "none"
    if kind.flip:
        return f"random crops (padded by {kind.max_shift} px) and horizontal flips"
    return f"random shifts of up to {kind.max_shift} px"
