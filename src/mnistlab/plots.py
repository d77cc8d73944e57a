"""Pictures, rendered headless with matplotlib's Agg backend (never opens a window)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from mnistlab.errors import UsageError


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure atomically as PNG and close it."""
    from mnistlab.train.checkpoint import atomic_write_bytes

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{p}: pictures are written as PNG; use a .png file name")
    atomic_write_bytes(p, lambda fh: fig.savefig(fh, format="png", dpi=100, bbox_inches="tight"))
    _pyplot().close(fig)
    return p


def save_image_grid(
    images: Any, titles: Sequence[str], path: str | Path, *, title: str | None = None, ncols: int | None = None
) -> Path:
    """A labelled grid of uint8 images [N, C, H, W] (grayscale or RGB), like the tutorials' subplots."""
    plt = _pyplot()
    n = len(images)
    ncols = ncols or min(8, max(1, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.6 * nrows + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        img = img.detach().cpu().numpy() if hasattr(img, "detach") else img
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(img.transpose(1, 2, 0))
        ax.set_title(str(titles[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
