"""How much memory a dataset's images take, and the budget they must fit in before they are read.

Images stay uint8 in memory: N x C x H x W bytes. A folder of photos read at a large
`--image-size` can need more than the machine has; it is refused before the first image is
decoded, with the flags that make it smaller, instead of the process being killed half way.

The budget is $MNISTLAB_MEMORY_BUDGET (bytes, or with a K, M or G suffix: `8G`) when set, else
half of the machine's physical memory (training needs room beside the images).
"""

from __future__ import annotations

import os

from mnistlab.errors import DataError, UsageError

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
FALLBACK_BUDGET = 4 * 1024**3  # where the physical memory cannot be read


def parse_bytes(text: str) -> int:
    """`123`, `512M`, `8G`, `1.5G` -> bytes; UsageError for anything else."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise UsageError(f"bad memory size {text!r}: give bytes, or a number with K, M or G (e.g. 8G)") from None
    if not number > 0:
        raise UsageError(f"bad memory size {text!r}: must be above 0")
    return int(number * _UNITS[unit])


def memory_budget() -> int:
    """The bytes a dataset's images may take: $MNISTLAB_MEMORY_BUDGET, else half the physical memory."""
    env = os.environ.get("MNISTLAB_MEMORY_BUDGET", "").strip()
    if env:
        return parse_bytes(env)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (ValueError, OSError, AttributeError):  # not every OS has these names
        return FALLBACK_BUDGET


def format_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB', 150_000_000 -> '143.1 MiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def image_bytes(count: int, channels: int, size: int) -> int:
    """Bytes of `count` uint8 images of channels x size x size."""
    return int(count) * int(channels) * int(size) * int(size)


def check_fits(needed: int, what: str, fix: str) -> None:
    """Refuse (DataError) when `needed` bytes of images would exceed the memory budget.

    Args:
        needed: the bytes the images would take.
        what: what they are ("1,000,000 images of 3x224x224 in /data/photos").
        fix: the flags that make them smaller ("lower --image-size, or --channels 1").
    """
    budget = memory_budget()
    if needed > budget:
        raise DataError(
            f"{what} would take {format_bytes(needed)} of memory (uint8), more than the budget of "
            f"{format_bytes(budget)}: {fix}, or raise MNISTLAB_MEMORY_BUDGET if the machine has the memory"
        )
