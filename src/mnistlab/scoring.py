"""Logits for a set of images, and the metrics of logits against labels (shared by training and evaluate)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mnistlab.metrics import classification_metrics
from mnistlab.tta import averaged_logits


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 2000,
    channels_last: bool = False,
    tta: bool = False,
) -> torch.Tensor:
    """Float32 logits [N, K] on the CPU for uint8 images [N, C, H, W], in eval mode and fp32.

    Large batches: evaluation has no backward pass, so memory is not the limit and
    fewer, bigger batches cut the per-call overhead. Images streamed from a Dataset
    (mnistlab.data.given.StreamedImages) are read a batch at a time. With `tta`, the
    log of the softmax averaged over shifted copies (mnistlab.tta).
    """
    from mnistlab.data import BatchIterator

    def plain(views: torch.Tensor) -> torch.Tensor:
        return predict_logits(model, views, mean, std, device=device, batch_size=batch_size,
                              channels_last=channels_last)

    if not isinstance(images, torch.Tensor):
        parts = [predict_logits(model, chunk, mean, std, device=device, batch_size=batch_size,
                                channels_last=channels_last, tta=tta) for chunk in images.chunks(batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, 0)
    if tta:
        return averaged_logits(plain, images) if len(images) else plain(images)

    was_training = model.training
    model.eval()
    batches = BatchIterator(
        images, torch.zeros(len(images), dtype=torch.long), batch_size=batch_size, mean=mean, std=std,
        shuffle=False, device=device, channels_last=channels_last,
    )
    outs = [model(x).float().cpu() for x, _ in batches]
    model.train(was_training)
    if not outs:
        return torch.zeros(0, 0)
    return torch.cat(outs)


def score(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Metrics dict for logits and labels: classification_metrics plus the cross-entropy `loss`."""
    metrics = classification_metrics(logits.numpy(), labels.cpu().numpy(), classes)
    metrics["loss"] = float(F.cross_entropy(logits, labels.cpu()).item()) if len(labels) else None
    return metrics
