"""1. Input pipeline: the tutorials' PIL + DataLoader way against mnistlab's BatchIterator.

One training epoch of the tutorials' DNN (784-128-128-128, BatchNorm, dropout, Adam 1e-3)
over 48,000 images, fed three ways, interleaved repetition by repetition:

- `pil-0w` / `pil-2w`: a per-item Dataset that builds a PIL image from the uint8 28x28 array
  and turns it into a normalised float tensor (torchvision's ToTensor + Normalize, rewritten
  with numpy because torchvision is not importable here), through
  DataLoader(batch_size, shuffle=True) with 0 and 2 worker processes;
- `mnistlab`: BatchIterator (the uint8 set resident on the device, one gather and one fused
  normalise per batch) feeding the engine's `train_one_epoch` (fused Adam, no per-step
  `.item()`), as `mnistlab train` runs it; the PIL pipelines feed the tutorials' loop
  (default Adam, `running_loss += loss.item()` every step). Same model, same optimizer
  settings, same number of steps.

Both "data only" (iterate the batches, no model) and "data + training" figures are reported,
because at batch 32 the DNN step itself, not the data, sets most of the time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common import Context, Row, load_mnist, median, ratio, sync, timed

TARGETS = {32: 2.2, 256: 5.0}  # mnistlab over the tutorials' 0-worker pipeline, data + training


class PilDataset:
    """The tutorials' per-item path: uint8 array -> PIL image -> float tensor, normalised."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch
        from PIL import Image

        img = Image.fromarray(self.images[i])  # uint8 [28, 28] -> mode "L"
        x = np.asarray(img, dtype=np.float32) / 255.0  # ToTensor
        x = (x - self.mean) / self.std  # Normalize
        return torch.from_numpy(x).unsqueeze(0), int(self.labels[i])


def _model(device: str) -> Any:
    import torch

    import mnistlab

    torch.manual_seed(0)
    return mnistlab.create_model("dnn", hidden_dims=(784, 128, 128, 128)).to(device)


def _epoch(batches: Any, device: str, train: bool, engine: bool) -> int:
    """One pass; returns the images seen. With train, one Adam step per batch.

    engine=False is the tutorials' loop (default Adam, the running loss read back with
    .item() every step); engine=True is mnistlab's `train_one_epoch` (fused Adam, losses
    kept on the device), i.e. what `mnistlab train` runs.
    """
    import torch
    from torch.nn import functional as F

    seen = 0
    if not train:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            seen += len(y)
        return seen
    model = _model(device)
    model.train()
    if engine:
        from contextlib import nullcontext

        from mnistlab.training.engine import train_one_epoch

        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device in ("cpu", "cuda"))
        result = train_one_epoch(model, batches, opt, None, max_steps=len(batches), label_smoothing=0.0,
                                 clip_grad=None, autocast=nullcontext(), device=torch.device(device), bar=None, epoch=1)
        return min(result.steps * batches.batch_size, len(batches.images))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    running = 0.0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += loss.item()
        seen += len(y)
    return seen


def run(ctx: Context) -> list[Row]:
    import torch
    from torch.utils.data import DataLoader

    from mnistlab.data import BatchIterator

    data = load_mnist(ctx)
    n = 48_000 if not ctx.quick else 512
    n = min(n, len(data.train_labels))
    images_u8 = data.train_images[:n]
    labels = data.train_labels[:n]
    np_images = images_u8[:, 0].numpy()
    np_labels = labels.numpy()
    mean, std = float(data.mean[0]), float(data.std[0])
    rows: list[Row] = []
    for device in ctx.devices:
        for bs in (32, 256):
            def pil(workers: int) -> Any:
                return DataLoader(
                    PilDataset(np_images, np_labels, mean, std), batch_size=bs, shuffle=True,
                    num_workers=workers, persistent_workers=False, pin_memory=device.startswith("cuda"),
                )

            def ours() -> Any:
                return BatchIterator(images_u8, labels, batch_size=bs, mean=data.mean, std=data.std,
                                     shuffle=True, seed=0, device=device)

            pipelines = {"pil-0w": lambda: pil(0), "pil-2w": lambda: pil(2), "mnistlab": ours}
            rates: dict[tuple[str, bool], list[float]] = {(p, t): [] for p in pipelines for t in (False, True)}
            for rep in range(ctx.reps):
                for train in (False, True):
                    for name, make in pipelines.items():
                        torch.manual_seed(rep)
                        seen = 0

                        def go() -> None:
                            nonlocal seen
                            seen = _epoch(make(), device, train, engine=name == "mnistlab")

                        seconds = timed(go, device)
                        rates[(name, train)].append(seen / seconds)
                        ctx.log(f"  pipeline b{bs} {name} {'train' if train else 'data'} rep {rep}: {seen / seconds:,.0f} img/s")
            for train in (False, True):
                what = "data + training" if train else "data only"
                base = median(rates[("pil-0w", train)])
                for name in pipelines:
                    med = median(rates[(name, train)])
                    target = met = ""
                    if name == "mnistlab" and train:
                        target = f">= {TARGETS[bs]}x pil-0w"
                        met = ctx.verdict(med / base >= TARGETS[bs])
                    rows.append(Row(
                        "1 pipeline", f"DNN b{bs} {what}, {name}", device, med, "img/s", ctx.reps,
                        "" if name == "pil-0w" else f"{ratio(med, base)} pil-0w", target, met,
                    ))
        sync(device)
    return rows
