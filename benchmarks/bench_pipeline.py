"""1. Input pipeline: the tutorials' PIL + DataLoader way against mnistlab's BatchIterator.

One training epoch of the tutorials' DNN (784-128-128-128, BatchNorm, dropout 0.2, Adam 1e-3)
over 48,000 images, fed three ways, interleaved repetition by repetition:

- `pil-0w` / `pil-2w`: the notebook as written. torchvision's `MNIST.__getitem__` (index the
  uint8 tensor, `Image.fromarray(..., mode="L")`) with `Compose([ToTensor(), Normalize(mean,
  std)])`, through DataLoader(batch_size, shuffle=True) with 0 and 2 worker processes, into the
  notebook's network (an `nn.Module` of `nn.Linear`/`nn.BatchNorm1d`/`nn.Dropout`) and loop
  (tqdm over the loader, torch's default Adam, `running_loss += loss.item()` every step).
  torchvision is used when it imports; here it does not (its compiled ops do not match this
  CPU torch build), so `TorchvisionMNIST` repeats its per-item calls op for op.
- `mnistlab`: BatchIterator (the uint8 set resident on the device, one gather and one fused
  normalise per batch) feeding the engine's `train_one_epoch` with the zoo's `dnn` at the same
  widths, as `mnistlab train --model dnn` runs it.

Same architecture, optimizer settings and number of steps on both sides. "data only"
(iterate the batches, no model) and "data + training" are both reported: once the data is
cheap, the training step sets the pace, so the ratio also measures the engine's step.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from common import Context, Row, load_mnist, median, ratio, sync, timed

TARGETS = {32: 2.2, 256: 5.0}  # mnistlab over the tutorials' 0-worker pipeline, data + training
HIDDEN = (128, 128, 128)
TORCH_DROPOUT = "mnistlab, torch dropout"  # the engine with torch's nn.Dropout: what mnistlab's Dropout buys


def _torchvision_transform(mean: float, std: float) -> Any:
    """torchvision's Compose([ToTensor(), Normalize]) where it imports, else None."""
    try:
        from torchvision import transforms  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - a broken install raises more than ImportError
        return None
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])


class TorchvisionMNIST:
    """The tutorials' dataset: torchvision's MNIST item path with ToTensor + Normalize.

    Without torchvision, `_to_tensor` and `_normalize` make the calls torchvision's
    `to_tensor` (PIL branch) and `normalize` make for a mode "L" image, in the same order.
    """

    def __init__(self, images: Any, labels: Any, mean: float, std: float, transform: Any = None) -> None:
        self.data, self.targets = images, labels  # torch uint8 [N, 28, 28], int64 [N]
        self.mean, self.std = (mean,), (std,)
        self.transform = transform  # torchvision's, or None for the replica below

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        if self.transform is not None:
            return self.transform(img), target
        return self._normalize(self._to_tensor(img)), target

    @staticmethod
    def _to_tensor(pic: Any) -> Any:
        import torch

        img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
        img = img.permute((2, 0, 1)).contiguous()  # HWC -> CHW
        return img.to(dtype=torch.get_default_dtype()).div(255)

    def _normalize(self, tensor: Any) -> Any:
        import torch

        tensor = tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device)
        if (std == 0).any():
            raise ValueError("std evaluated to zero")
        return tensor.sub_(mean[:, None, None]).div_(std[:, None, None])


def _tutorial_model(device: str) -> Any:
    """The notebook's DNN, written as it is there (torch's own layers)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class DNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.bn1 = nn.Linear(784, HIDDEN[0]), nn.BatchNorm1d(HIDDEN[0])
            self.fc2, self.bn2 = nn.Linear(HIDDEN[0], HIDDEN[1]), nn.BatchNorm1d(HIDDEN[1])
            self.fc3, self.bn3 = nn.Linear(HIDDEN[1], HIDDEN[2]), nn.BatchNorm1d(HIDDEN[2])
            self.fc4 = nn.Linear(HIDDEN[2], 10)
            self.dropout = nn.Dropout(0.2)

        def forward(self, x: Any) -> Any:
            x = x.view(-1, 784)
            x = self.dropout(F.relu(self.bn1(self.fc1(x))))
            x = self.dropout(F.relu(self.bn2(self.fc2(x))))
            x = self.dropout(F.relu(self.bn3(self.fc3(x))))
            return self.fc4(x)

    torch.manual_seed(0)
    return DNN().to(device)


def _mnistlab_model(device: str, torch_dropout: bool = False) -> Any:
    """The zoo's `dnn` at the tutorial's widths; torch_dropout puts torch's nn.Dropout back in
    place of mnistlab's (the `mnistlab, torch dropout` row: what the cheaper CPU mask buys)."""
    import torch
    from torch import nn

    import mnistlab

    torch.manual_seed(0)
    model = mnistlab.create_model("dnn", hidden_dims=(784, *HIDDEN), dropout_ratio=0.2)
    if torch_dropout:
        for i, layer in enumerate(model):
            if isinstance(layer, nn.Dropout):
                model[i] = nn.Dropout(layer.p)
    return model.to(device)


def _epoch(batches: Any, device: str, train: bool, engine: bool, torch_dropout: bool = False) -> int:
    """One pass; returns the images seen. With train, one Adam step per batch.

    engine=False is the notebook's loop; engine=True is mnistlab's `train_one_epoch` with the
    optimizer `mnistlab train` builds (fused Adam), i.e. what `mnistlab train` runs.
    """
    import torch
    from torch.nn import functional as F

    seen = 0
    if not train:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            seen += len(y)
        return seen
    if engine:
        from contextlib import nullcontext

        from mnistlab.config import TrainConfig
        from mnistlab.training.epoch import train_one_epoch
        from mnistlab.training.optim import build_optimizer

        model = _mnistlab_model(device, torch_dropout)
        opt = build_optimizer(TrainConfig(optimizer="adam", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0), model, torch.device(device))
        result = train_one_epoch(model, batches, opt, None, max_steps=len(batches), label_smoothing=0.0,
                                 clip_grad=None, autocast=nullcontext(), device=torch.device(device), bar=None, epoch=1)
        return min(result.steps * batches.batch_size, len(batches.images))
    from tqdm import tqdm

    model = _tutorial_model(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    running = 0.0
    with open(os.devnull, "w") as sink:  # the notebook's progress bar, drawn nowhere
        for x, y in tqdm(batches, file=sink):
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
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
    tutorial_images = images_u8[:, 0].contiguous()  # torchvision's MNIST.data is [N, 28, 28]
    mean, std = float(data.mean[0]), float(data.std[0])
    transform = _torchvision_transform(mean, std)  # looked up once, outside the timed epochs
    rows: list[Row] = []
    for device in ctx.devices:
        for bs in (32, 256):
            def pil(workers: int) -> Any:
                return DataLoader(
                    TorchvisionMNIST(tutorial_images, labels, mean, std, transform), batch_size=bs, shuffle=True,
                    num_workers=workers, persistent_workers=False, pin_memory=device.startswith("cuda"),
                )

            def ours() -> Any:
                return BatchIterator(images_u8, labels, batch_size=bs, mean=data.mean, std=data.std,
                                     shuffle=True, seed=0, device=device)

            pipelines = {"pil-0w": lambda: pil(0), "pil-2w": lambda: pil(2), "mnistlab": ours,
                         TORCH_DROPOUT: ours}
            rates: dict[tuple[str, bool], list[float]] = {(p, t): [] for p in pipelines for t in (False, True)}
            for rep in range(ctx.reps):
                for train in (False, True):
                    for name, make in pipelines.items():
                        if name == TORCH_DROPOUT and not train:
                            continue  # same data path as `mnistlab`
                        torch.manual_seed(rep)
                        seen = 0

                        def go() -> None:
                            nonlocal seen
                            seen = _epoch(make(), device, train, engine=name.startswith("mnistlab"),
                                          torch_dropout=name == TORCH_DROPOUT)

                        seconds = timed(go, device)
                        rates[(name, train)].append(seen / seconds)
                        ctx.log(f"  pipeline b{bs} {name} {'train' if train else 'data'} rep {rep}: {seen / seconds:,.0f} img/s")
            for train in (False, True):
                what = "data + training" if train else "data only"
                base = median(rates[("pil-0w", train)])
                for name in pipelines:
                    if not rates[(name, train)]:
                        continue
                    med = median(rates[(name, train)])
                    target = met = ""
                    if name == "mnistlab" and train:
                        target = f">= {TARGETS[bs]}x pil-0w"
                        met = ctx.verdict(med / base >= TARGETS[bs])
                    note = "" if name == "pil-0w" else f"{ratio(med, base)} pil-0w"
                    if name == TORCH_DROPOUT:
                        note += f"; mnistlab is {ratio(median(rates[('mnistlab', train)]), med)} this"
                    rows.append(Row("1 pipeline", f"DNN b{bs} {what}, {name}", device, med, "img/s", ctx.reps,
                                    note, target, met))
        sync(device)
    return rows
