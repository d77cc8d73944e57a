"""Probes behind the step-level claims in docs/benchmarks.md ("what each change bought").

    python benchmarks/probe_step.py dnn      # the DNN 784-128-128-128 training step: variants side by side + profile
    python benchmarks/probe_step.py conv1    # fast's first convolution: oneDNN vs an im2col matmul
    python benchmarks/probe_step.py best     # best's batches with/without rotations, and its step at batch 128/256

Not part of `make bench`: these probe single choices (bf16 autocast for the DNN, the Adam
implementation, thread count, torch's dropout against mnistlab's, an im2col first
convolution) on made-up tensors, interleaved variant by variant, medians of 5 repetitions.
Run them on a quiet machine: on 2 cores any other process spoils the timings.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import mnistlab

REPS = 5


def _medians(fns: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run each variant REPS times, interleaved; the median of what each returns (a rate or a time)."""
    results: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(REPS):
        for name, fn in fns.items():
            results[name].append(fn())
    return {k: statistics.median(v) for k, v in results.items()}


def _images_per_second(step: Callable[[], None], batch: int, *, warmup: int, steps: int) -> float:
    """Images/second of `steps` calls of a training step on a batch of `batch`, after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def _dnn(torch_dropout: bool) -> nn.Module:
    torch.manual_seed(0)
    model = mnistlab.create_model("dnn", hidden_dims=(784, 128, 128, 128))
    if torch_dropout:
        for i, layer in enumerate(model):
            if isinstance(layer, nn.Dropout):
                model[i] = nn.Dropout(layer.p)
    return model


def _dnn_rate(batch: int, *, bf16: bool = False, fused: bool = True, threads: int = 2,
              torch_dropout: bool = False, steps: int = 150) -> float:
    """Training images/second of the DNN step (forward, loss, backward, Adam) on one fixed batch."""
    torch.set_num_threads(threads)
    model = _dnn(torch_dropout).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def step() -> None:
        with ctx():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rate = _images_per_second(step, batch, warmup=20, steps=steps)
    torch.set_num_threads(2)
    return rate


def _dnn_profile(batch: int, torch_dropout: bool) -> list[tuple[str, float]]:
    """The step's top ops by share of self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    model = _dnn(torch_dropout).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    for _ in range(20):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(50):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or e.key.startswith("Optimizer.")]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [(e.key, 100 * e.self_cpu_time_total / total) for e in events[:6]]


def probe_dnn() -> None:
    print(f"DNN 784-128-128-128 training step, medians of {REPS} interleaved repetitions (img/s)")
    for batch in (32, 256):
        variants: dict[str, dict[str, Any]] = {
            "engine default (fp32, fused Adam, mnistlab Dropout, 2 threads)": {},
            "torch nn.Dropout": {"torch_dropout": True},
            "bf16 autocast": {"bf16": True},
            "foreach Adam instead of fused": {"fused": False},
            "1 thread": {"threads": 1},
        }
        rates = _medians({k: (lambda kw=kw: _dnn_rate(batch, **kw)) for k, kw in variants.items()})
        base = next(iter(rates.values()))
        for name, rate in rates.items():
            print(f"  batch {batch:3d}  {name:66s} {rate:9,.0f}  {rate / base:.2f}x")
        for torch_dropout in (True, False):
            which = "torch nn.Dropout" if torch_dropout else "mnistlab Dropout"
            top = ", ".join(f"{k} {v:.0f}%" for k, v in _dnn_profile(batch, torch_dropout))
            print(f"  batch {batch:3d}  profile with {which}: {top}")


def probe_conv1() -> None:
    """fast's first layer (1 -> 16 channels, 5x5, stride 2) under bf16 autocast, channels_last."""
    batch, c1 = 256, 16
    conv = nn.Conv2d(1, c1, 5, stride=2).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)

    def onednn() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return conv(x)

    def im2col() -> torch.Tensor:
        # The 5x5 patches as a strided view of the [B, 28, 28] images, then one matmul: the
        # output comes out [B*12*12, c1], i.e. already NHWC.
        patches = x.reshape(batch, 28, 28).as_strided((batch, 12, 12, 5, 5), (784, 56, 2, 28, 1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = F.linear(patches.reshape(batch * 144, 25), conv.weight.reshape(c1, 25), conv.bias)
        return out.view(batch, 12, 12, c1).permute(0, 3, 1, 2)

    assert torch.allclose(onednn().float(), im2col().float(), atol=1e-2)
    grad = torch.randn(batch, c1, 12, 12, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def timed(fn: Callable[[], torch.Tensor], backward: bool) -> Callable[[], float]:
        def run() -> float:
            for _ in range(5):
                fn().backward(grad) if backward else fn()
            start = time.perf_counter()
            for _ in range(50):
                fn().backward(grad) if backward else fn()
            return (time.perf_counter() - start) / 50 * 1e6
        return run

    us = _medians({
        "oneDNN conv, forward": timed(onednn, False), "im2col, forward": timed(im2col, False),
        "oneDNN conv, forward + backward": timed(onednn, True), "im2col, forward + backward": timed(im2col, True),
    })
    print(f"fast's first convolution, batch {batch}, bf16, medians of {REPS} (us per batch)")
    for name, value in us.items():
        print(f"  {name:34s} {value:8.0f}")
    print(f"  im2col / oneDNN, forward + backward: {us['im2col, forward + backward'] / us['oneDNN conv, forward + backward']:.2f}x")


def _best_batches_rate(augment: Any, n: int = 12_800) -> float:
    """Images/second of BatchIterator alone making `best`'s training batches (uint8 -> shifted [-> warped] -> float)."""
    from mnistlab.data import BatchIterator

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    batches = BatchIterator(images, torch.zeros(n, dtype=torch.long), batch_size=128, mean=(0.1307,), std=(0.3081,),
                            shuffle=True, seed=0, augment=augment, channels_last=True)
    start = time.perf_counter()
    for _ in batches:
        pass
    return n / (time.perf_counter() - start)


def _best_step_rate(batch: int, steps: int = 30) -> float:
    """Training images/second of `best`'s step (forward, label-smoothed loss, backward, AdamW), fp32, 1 thread."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = mnistlab.create_model("best").to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _images_per_second(step, batch, warmup=3, steps=steps)


def probe_best() -> None:
    """Is `--rotate/--zoom` a cost beside `best`'s step, and would a bigger batch train faster? (1 thread)"""
    from mnistlab.data.augment import Augment

    loader = _medians({
        "batches, shifts only": lambda: _best_batches_rate(Augment(2)),
        "batches, shifts + rotate 10 + zoom 0.1": lambda: _best_batches_rate(Augment(2, rotate=10.0, zoom=0.1)),
    })
    step = _medians({"step, batch 128": lambda: _best_step_rate(128), "step, batch 256": lambda: _best_step_rate(256)})
    print("best, images/second on 1 thread (medians of 5):")
    for name, value in {**loader, **step}.items():
        print(f"  {name:40s} {value:9.0f}")
    per_image = {k: 1 / v for k, v in {**loader, **step}.items()}
    extra = per_image["batches, shifts + rotate 10 + zoom 0.1"] - per_image["batches, shifts only"]
    print(f"  the warp's cost per image / the batch-128 step's: {extra / per_image['step, batch 128']:.3f}")
    print(f"  step time per image, batch 256 / batch 128: {per_image['step, batch 256'] / per_image['step, batch 128']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=["dnn", "conv1", "best"])
    args = p.parse_args()
    {"dnn": probe_dnn, "conv1": probe_conv1, "best": probe_best}[args.probe]()


if __name__ == "__main__":
    main()
