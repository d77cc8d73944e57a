"""Pictures, drawn with matplotlib's object API: no pyplot, so no global figure list and no backend switch.

A notebook keeps its own backend (figures drawn here never replace `%matplotlib inline`), and the
figures these functions return show there as PNG images by themselves (`InlineFigure`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from mnistlab.errors import UsageError

_DPI = 100


class InlineFigure(Figure):
    """A matplotlib Figure that shows as a PNG in a notebook, whether or not pyplot was ever imported."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def new_figure(**options: Any) -> InlineFigure:
    """A figure of its own (`matplotlib.figure.Figure(**options)`), not registered with pyplot."""
    return InlineFigure(**options)


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes, as save_figure writes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _integer_ticks(ax: Any) -> None:
    """Epochs are whole numbers: no 1.25 ticks on short runs."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure atomically as PNG."""
    from mnistlab.training.checkpoint import atomic_write_bytes

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{p}: pictures are written as PNG; use a .png file name")
    atomic_write_bytes(p, lambda fh: fh.write(figure_png(fig)))
    return p


def save_image_grid(
    images: Any, titles: Sequence[str], path: str | Path, *, title: str | None = None, ncols: int | None = None
) -> Path:
    """A labelled grid of uint8 images [N, C, H, W] (grayscale or RGB), like the tutorials' subplots."""
    n = len(images)
    ncols = ncols or min(8, max(1, n))
    nrows = math.ceil(n / ncols)
    fig = new_figure(figsize=(1.4 * ncols, 1.6 * nrows + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
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


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, *, best_epoch: int | None = None,
                title: str | None = None) -> Path:
    """Loss and accuracy per epoch, train and valid, in two panels; the best epoch is marked."""
    return save_figure(curves_figure(history, best_epoch=best_epoch, title=title), path)


def curves_figure(history: Sequence[dict[str, Any]], *, best_epoch: int | None = None, title: str | None = None) -> Any:
    """The figure of plot_curves: metrics.csv rows -> loss and accuracy panels."""
    fig = new_figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for ax, metric, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for split, style in (("train", "-o"), ("valid", "-s")):
            pts = [(e, r.get(f"{split}_{metric}")) for e, r in zip(epochs, history)
                   if r.get(f"{split}_{metric}") is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, markersize=3, label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        _integer_ticks(ax)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, *,
                          title: str | None = None) -> Path:
    """The confusion matrix as counts and row-normalised (recall per true class), side by side."""
    return save_figure(confusion_figure(matrix, classes, title=title), path)


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], *, title: str | None = None) -> Any:
    """The figure of plot_confusion_matrix."""
    import numpy as np

    cm = np.asarray(matrix, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    k = len(cm)
    size = max(4.0, 0.45 * k + 1.5)
    fig = new_figure(figsize=(2 * size + 1, size))
    axes = fig.subplots(1, 2)
    names = [str(c)[:12] for c in classes]
    # Cell numbers only while they stay readable.
    annotate = k <= 15
    for ax, data, sub, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised", ".2f")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=(data.max() or 1) if fmt == "d" else 1.0)
        ax.set_xticks(range(k), names, rotation=90 if max(map(len, names), default=1) > 2 else 0, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(sub)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if annotate:
            cut = data.max() / 2 if data.max() else 0.5
            for i in range(k):
                for j in range(k):
                    v = data[i, j]
                    ax.text(j, i, format(v, fmt) if fmt == "d" else f"{v:.2f}".lstrip("0") or "0",
                            ha="center", va="center", fontsize=6 if k > 10 else 7,
                            color="white" if v > cut else "black")
    if title:
        fig.suptitle(title)
    return fig


def plot_accuracy_overlay(curves: dict[str, Sequence[tuple[int, float]]], path: str | Path, *,
                          title: str | None = None, ylabel: str = "accuracy") -> Path:
    """Several runs' accuracy per epoch on one axis (one line per run)."""
    fig = new_figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], "-o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    _integer_ticks(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_bars(names: Sequence[str], values: Sequence[float | None], path: str | Path, *,
              title: str | None = None, ylabel: str = "") -> Path:
    """A horizontal bar per name with its value written on it; None (a failed run) shows as 'failed'."""
    n = len(names)
    fig = new_figure(figsize=(8, 0.45 * n + 1.2))
    ax = fig.subplots()
    vals = [0.0 if v is None else float(v) for v in values]
    bars = ax.barh(range(n), vals, color=["tab:red" if v is None else "tab:blue" for v in values])
    ax.set_yticks(range(n), [str(s) for s in names], fontsize=8)
    ax.invert_yaxis()  # first run on top, like the tables
    for bar, v in zip(bars, values):
        ax.text(bar.get_width() + 0.005, bar.get_y() + bar.get_height() / 2,
                "failed" if v is None else f"{v:.4f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1 if all(0 <= x <= 1 for x in vals) else max(vals, default=1) * 1.15)
    ax.set_xlabel(ylabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def save_message(path: str | Path, message: str) -> Path:
    """A small picture holding only a message (e.g. "no misclassified test images")."""
    fig = new_figure(figsize=(5, 1.2))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12)
    return save_figure(fig, path)


def plot_lr_find(result: Any, path: str | Path, *, title: str | None = None) -> Path:
    """A learning-rate range test (mnistlab.training.lr_finder.LRFindResult): the loss of each step and the
    smoothed loss against the rate (log axis), the suggestion marked."""
    fig = new_figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="lightgray", linewidth=1, label="loss of each step")
    ax.plot(result.lrs, result.smoothed, linewidth=2, label="smoothed loss")
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", linewidth=1.5,
               label=f"suggested lr {result.suggestion:.2e} ({result.rule})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # the explosion at the end must not squash the interesting part
        low, start = min(finite + [v for v in result.losses if math.isfinite(v)]), finite[0]
        ax.set_ylim(low - 0.05 * abs(start - low) - 1e-3, max(start, low) * 1.3 + 1e-3)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
