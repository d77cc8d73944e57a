"""5. The limit: FLOPs of one training epoch of `fast` against the machine's measured matmul speed.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode over one full training step
(forward, loss, backward) at the recipe's batch, times the recipe's steps. The ceilings are
torch.mm of 2048x2048 in fp32 and bf16, measured in this same run; the epoch itself is
timed here too (the engine loop with the recipe's settings), so "x the floor" compares
figures taken seconds apart on the same machine.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from bench_throughput import setup
from common import MATMUL_N as N
from common import Context, Row, ceiling, floor_note, floors, load_mnist, median
from torch.nn import functional as F

TARGET_FLOOR = 4.0  # the `fast` epoch within 4x of its bf16-matmul floor


def training_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one training step (forward, loss, backward) of `model` on the batch `x`."""
    from torch.utils.flop_counter import FlopCounterMode

    y = torch.randint(0, 10, (len(x),), device=x.device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return int(counter.get_total_flops())


def step_flops(device: str, batch: int) -> int:
    """FLOPs of one training step of `fast` (forward + backward) at `batch` images."""
    model, _, cl = setup("fast", device)
    x = torch.randn(batch, 1, 28, 28, device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    return training_flops(model, x)


def fast_recipe(n_images: int) -> tuple[Any, int, int]:
    """(resolved config, training images, steps) of `mnistlab train`'s default on a set of n_images."""
    from mnistlab.config import TrainConfig, resolve_config

    cfg = resolve_config(TrainConfig(model="fast"))
    n_train = round(n_images * (1 - cfg.valid_fraction))
    return cfg, n_train, round(cfg.epochs * math.ceil(n_train / cfg.batch_size))


def run(ctx: Context) -> list[Row]:
    from bench_throughput import train_epoch

    data = load_mnist(ctx)
    cfg, n_train, steps = fast_recipe(len(data.train_labels))
    x, y = data.train_images[:n_train], data.train_labels[:n_train]
    rows: list[Row] = []
    for device in ctx.devices:
        flops = step_flops(device, cfg.batch_size) * steps
        fp32, bf16, epoch = [], [], []
        for _ in range(ctx.reps):
            peak = ceiling(device)
            fp32.append(peak["fp32"])
            bf16.append(peak["bf16"])
            epoch.append(train_epoch("fast", x, y, data, cfg.batch_size, device, max_steps=steps)[0])
        g32, g16, t = median(fp32), median(bf16), median(epoch)
        achieved = flops / t / 1e9
        f16, f32, lowest = floors(flops, g32, g16)
        rows += [
            Row("5 limit", f"matmul {N}x{N} fp32", device, g32, "GFLOP/s", ctx.reps),
            Row("5 limit", f"matmul {N}x{N} bf16", device, g16, "GFLOP/s", ctx.reps, ratio=f"{g16 / g32:.2f}x fp32"),
            Row("5 limit", f"fast recipe epoch: {steps} steps x b{cfg.batch_size}", device, flops / 1e9, "GFLOP", 1,
                ratio=f"{flops / steps / cfg.batch_size / 1e6:.2f} MFLOP/image"),
            Row("5 limit", "  floor at the fp32 matmul peak", device, f32, "s", ctx.reps),
            Row("5 limit", "  floor at the bf16 matmul peak", device, f16, "s", ctx.reps),
            Row("5 limit", "  measured (engine loop, recipe settings)", device, t, "s", ctx.reps,
                ratio=f"{t / f16:.1f}x bf16 floor, {t / f32:.1f}x fp32 floor" + floor_note(f16, f32),
                target=f"<= {TARGET_FLOOR:g}x bf16 floor", met=ctx.verdict(t / lowest <= TARGET_FLOOR)),
            Row("5 limit", "  achieved", device, achieved, "GFLOP/s", ctx.reps,
                ratio=f"{achieved / g16:.0%} of bf16 peak"),
        ]
    return rows
