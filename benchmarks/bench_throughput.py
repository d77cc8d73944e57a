"""3. Throughput at scale: training and inference images/second, and epoch time at 1x/2x/4x MNIST.

Training goes through the engine's own `train_one_epoch` with the settings `mnistlab train`
picks for each model (channels_last and bf16 autocast for convolutional models on CPUs with
native bf16, fused Adam), fed by BatchIterator; inference is `predict_logits` (eval mode,
fp32), as `mnistlab evaluate` runs it. Epoch time at 2x and 4x MNIST uses the training set
repeated, so the only change is the number of steps: the ratio to 1x should be 2 and 4.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from common import Context, Row, load_mnist, median, timed

MODELS = ("fast", "cnn-bn", "dnn")
BATCHES = (256, 1024)


def setup(name: str, device: str) -> tuple[torch.nn.Module, Any, bool]:
    """(model, autocast context, channels_last) as the engine would choose them."""
    import mnistlab
    from mnistlab.training.hardware import has_conv, native_bf16

    torch.manual_seed(0)
    model = mnistlab.create_model(name).to(device)
    conv = has_conv(model)
    dev = torch.device(device)
    if conv:
        model.to(memory_format=torch.channels_last)
    amp = native_bf16(dev) and (dev.type == "cuda" or conv)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext()
    return model, autocast, conv


def train_epoch(name: str, images: torch.Tensor, labels: torch.Tensor, data: Any, bs: int, device: str,
                max_steps: int | None = None) -> tuple[float, int]:
    """(seconds, images) of one engine epoch of `name` over images (model and optimizer built outside the timing)."""
    from mnistlab.data import BatchIterator
    from mnistlab.training.epoch import train_one_epoch

    model, autocast, cl = setup(name, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device in ("cpu", "cuda"))
    batches = BatchIterator(images, labels, batch_size=bs, mean=data.mean, std=data.std, shuffle=True,
                            seed=0, device=device, channels_last=cl)
    steps = len(batches) if max_steps is None else min(max_steps, len(batches))
    result = train_one_epoch(model, batches, opt, None, max_steps=steps, label_smoothing=0.0, clip_grad=None,
                             autocast=autocast, device=torch.device(device), bar=None, epoch=1)
    return result.seconds, min(steps * bs, len(images))


def run(ctx: Context) -> list[Row]:
    from mnistlab.evaluation import predict_logits

    data = load_mnist(ctx)
    n_train = 8192 if not ctx.quick else 512
    n_infer = 10_000 if not ctx.quick else 500
    x_tr, y_tr = data.train_images[:n_train], data.train_labels[:n_train]
    x_inf = data.test_images[:n_infer]
    rows: list[Row] = []
    for device in ctx.devices:
        for name in MODELS:
            for bs in BATCHES:
                tr, inf = [], []
                for rep in range(ctx.reps):
                    seconds, seen = train_epoch(name, x_tr, y_tr, data, bs, device)
                    tr.append(seen / seconds)
                    model, _, cl = setup(name, device)
                    seconds = timed(lambda: predict_logits(model, x_inf, data.mean, data.std, device=device,
                                                           batch_size=bs, channels_last=cl), device)
                    inf.append(len(x_inf) / seconds)
                ctx.log(f"  throughput {name} b{bs}: train {median(tr):,.0f} img/s, infer {median(inf):,.0f} img/s")
                rows.append(Row("3 throughput", f"{name} b{bs} training", device, median(tr), "img/s", ctx.reps))
                rows.append(Row("3 throughput", f"{name} b{bs} inference", device, median(inf), "img/s", ctx.reps,
                                ratio=f"{median(inf) / median(tr):.1f}x training"))
        # Epoch time by dataset size: the fast model with its recipe batch (256).
        n = len(data.train_labels) if not ctx.quick else 512
        base_x, base_y = data.train_images[:n], data.train_labels[:n]
        times: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for rep in range(ctx.reps):
            for k in times:
                x, y = base_x.repeat(k, 1, 1, 1), base_y.repeat(k)
                times[k].append(train_epoch("fast", x, y, data, 256, device)[0])
        t1 = median(times[1])
        for k, ts in times.items():
            rows.append(Row("3 throughput", f"fast epoch at {k}x MNIST train ({k * n:,} images)", device, median(ts),
                            "s", ctx.reps, ratio=f"{median(ts) / t1:.2f}x 1x (ideal {k})",
                            target=f"linear: {k}x +-15%" if k > 1 else "",
                            met=ctx.verdict(abs(median(ts) / t1 / k - 1) <= 0.15) if k > 1 else ""))
    return rows
