"""Which augmentation `--augment` means for a dataset: shifts for digits, crops and flips for colour.

Digits must not be mirrored (a flipped 2 is no 2), so one-channel data gets the random shifts
of up to 2 pixels it always had. Colour photos (CIFAR, a folder of pictures) get the standard
recipe instead: a random crop of the image zero-padded by 1/8 of its side (4 px at 32x32) and a
horizontal flip of half the images. Both are done by `BatchIterator` in the one gather that
makes each batch, drawn from the epoch's seeded generator, so a resumed run sees the same
augmented batches.

`--rotate DEG` and `--zoom F` add a random rotation (uniform in +-DEG degrees) and scale (uniform
in [1-F, 1+F]) about the image centre, for any number of channels: handwriting is written at a
slant and a size, and these are the distortions the strongest single-network MNIST results train
with. They are one batched bilinear resample (`torch.nn.functional.grid_sample`) after the shift,
drawn after the shifts and flips, so runs without them see exactly the batches they always did.
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
    rotate: float = 0.0  # degrees: each image is turned by a uniform draw in [-rotate, rotate]
    zoom: float = 0.0  # each image is scaled by a uniform draw in [1 - zoom, 1 + zoom]

    @property
    def warps(self) -> bool:
        """Whether images are also rotated or scaled (a resample, not only a crop)."""
        return self.rotate > 0 or self.zoom > 0


def augment_kind(augment: bool | None, channels: int, image_size: int, rotate: float | None = 0.0,
                 zoom: float | None = 0.0) -> Augment | None:
    """The augmentation `--augment` picks for data of `channels` x `image_size` x `image_size` (None: off),
    with `--rotate` degrees and `--zoom` (0 or None: none; a run folder written before they existed has neither)."""
    if not augment:
        return None
    warp = {"rotate": float(rotate or 0.0), "zoom": float(zoom or 0.0)}
    if channels == 1:
        return Augment(DIGIT_SHIFT, **warp)
    return Augment(max(1, round(image_size / 8)), flip=True, **warp)


def augment_text(kind: Augment | None) -> str:
    """How reports and the run's first line name it."""
    if kind is None:
        return "none"
    if kind.flip:
        text = f"random crops (padded by {kind.max_shift} px) and horizontal flips"
    else:
        text = f"random shifts of up to {kind.max_shift} px"
    if kind.rotate > 0:
        text += f", rotations of up to {kind.rotate:g} degrees"
    if kind.zoom > 0:
        text += f", scaling by {1 - kind.zoom:g} to {1 + kind.zoom:g}"
    return text
