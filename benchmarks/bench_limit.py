"""5. The limit: FLOPs of one training epoch of `fast` against the machine's measured matmul speed.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode over one full training step
(forward, loss, backward) at the recipe's batch, times the recipe's steps. The ceilings are
torch.mm of 2048x2048 in fp32 and bf16, measured in this same run; the epoch itself is
timed here too (the engine loop with the recipe's settings), so "x the floor" compares
figures taken seconds apart on the same machine.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from common import Context, Row, load_mnist, median, timed
from bench_throughput import setup

N = 2048


def matmul_gflops(dtype: torch.dtype, device: str, reps: int) -> float:
    a = torch.randn(N, N, device=device).to(dtype)
    b = torch.randn(N, N, device=device).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    inner = 5
    times = [timed(lambda: [torch.mm(a, b) for _ in range(inner)], device) / inner for _ in range(reps)]
    return 2 * N**3 / median(times) / 1e9


def step_flops(device: str, batch: int) -> int:
    """FLOPs of one training step of `fast` (forward + backward) at `batch` images."""
    from torch.utils.flop_counter import FlopCounterMode

    model, _, cl = setup("fast", device)
    x = torch.randn(batch, 1, 28, 28, device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return int(counter.get_total_flops())


def run(ctx: Context) -> list[Row]:
    from mnistlab.config import TrainConfig, resolve_config
    from bench_throughput import train_epoch

    cfg = resolve_config(TrainConfig(model="fast"))
    data = load_mnist(ctx)
    n_train = round(len(data.train_labels) * (1 - cfg.valid_fraction))
    steps = round(cfg.epochs * math.ceil(n_train / cfg.batch_size))
    x, y = data.train_images[:n_train], data.train_labels[:n_train]
    rows: list[Row] = []
    for device in ctx.devices:
        flops = step_flops(device, cfg.batch_size) * steps
        fp32, bf16, epoch = [], [], []
        for _ in range(ctx.reps):
            fp32.append(matmul_gflops(torch.float32, device, 3))
            bf16.append(matmul_gflops(torch.bfloat16, device, 3))
            epoch.append(train_epoch("fast", x, y, data, cfg.batch_size, device, max_steps=steps)[0])
        g32, g16, t = median(fp32), median(bf16), median(epoch)
        achieved = flops / t / 1e9
        rows += [
            Row("5 limit", f"matmul {N}x{N} fp32", device, g32, "GFLOP/s", ctx.reps),
            Row("5 limit", f"matmul {N}x{N} bf16", device, g16, "GFLOP/s", ctx.reps, ratio=f"{g16 / g32:.2f}x fp32"),
            Row("5 limit", f"fast recipe epoch: {steps} steps x b{cfg.batch_size}", device, flops / 1e9, "GFLOP", 1,
                ratio=f"{flops / steps / cfg.batch_size / 1e6:.2f} MFLOP/image"),
            Row("5 limit", "  floor at the fp32 matmul peak", device, flops / (g32 * 1e9), "s", ctx.reps),
            Row("5 limit", "  floor at the bf16 matmul peak", device, flops / (g16 * 1e9), "s", ctx.reps),
            Row("5 limit", "  measured (engine loop, recipe settings)", device, t, "s", ctx.reps,
                ratio=f"{t / (flops / (g16 * 1e9)):.1f}x bf16 floor, {t / (flops / (g32 * 1e9)):.1f}x fp32 floor"),
            Row("5 limit", "  achieved", device, achieved, "GFLOP/s", ctx.reps,
                ratio=f"{achieved / g16:.0%} of bf16 peak"),
        ]
    return rows
