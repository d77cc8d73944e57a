"""What each change to the `fast` default bought, every step measured side by side.

Not part of the default suite (it trains 6 configurations x 5 seeds): run it with
`python benchmarks/run.py --only changes`. Each configuration is a full in-process
`mnistlab.train(...)` run (the engine, evaluation and checkpoints exactly as `mnistlab train`
runs them); seeds are the outer loop and configurations the inner one, so the
configurations are interleaved in time and share the machine's load alike.

The starting point (the `fast` model as it was before tuning on this AMX machine, with its
classifier flattening the feature map in NCHW order) is registered here, for this process
only, as `fast-nchw`.
"""

from __future__ import annotations

import warnings
from typing import Any

from common import Context, Row, median

SEEDS = (0, 1, 2, 3, 4)


def _register_start_model() -> None:
    """`fast-nchw`: today's `fast` layers with the pre-tuning NCHW flatten (same recipe)."""
    from torch import nn

    from mnistlab.models.cnn import conv_out
    from mnistlab.models.registry import _REGISTRY, get_model_info, register_model

    if "fast-nchw" in _REGISTRY:
        return

    @register_model("fast-nchw", description="fast before tuning (NCHW flatten)", recipe=get_model_info("fast").recipe)
    def fast_nchw(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, c1: int = 16,
                  c2: int = 32, hidden: int = 256) -> nn.Module:
        s = conv_out(conv_out(image_size, 5, stride=2), 3) // 2
        return nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, stride=2), nn.ReLU(inplace=True), nn.Conv2d(c1, c2, 3), nn.MaxPool2d(2),
            nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(c2 * s * s, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )


# (label, overrides of mnistlab.train). The rows marked "+" build on the row before;
# "tried" rows are alternatives measured in the same run and rejected.
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("start: c1 16, b256, 1 epoch, NCHW flatten", {"model": "fast-nchw", "epochs": 1.0, "model_options": {"c1": 16}}),
    ("+ NHWC flatten (no copy of the feature map)", {"model": "fast", "epochs": 1.0, "model_options": {"c1": 16}}),
    ("+ 0.9 epoch (= the default: c1 16, 0.9 epoch)", {"model": "fast"}),
    ("tried: c1 32, 0.8 epoch (the default before)", {"model": "fast", "epochs": 0.8, "model_options": {"c1": 32}}),
    ("tried: c1 16, 0.8 epoch", {"model": "fast", "epochs": 0.8, "model_options": {"c1": 16}}),
    ("tried: c1 16, b128, 0.9 epoch", {"model": "fast", "batch_size": 128, "epochs": 0.9, "model_options": {"c1": 16}}),
]


def run(ctx: Context) -> list[Row]:
    import mnistlab

    _register_start_model()
    seeds = SEEDS if not ctx.quick else (0,)
    rows: list[Row] = []
    for device in ctx.devices:
        results: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in CONFIGS}
        # Warm-up: the first run in a process pays for oneDNN kernel creation; keep it out of the rows.
        for _, overrides in CONFIGS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mnistlab.train(seed=0, data_dir=ctx.data_dir, out=str(ctx.work / "warmup"), progress="quiet",
                               plots=False, device=device, **{**overrides, "epochs": 0.02})
        for seed in seeds:
            for label, overrides in CONFIGS:
                extra = {"epochs": 0.1} if ctx.quick else {}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run_ = mnistlab.train(seed=seed, data_dir=ctx.data_dir, out=str(ctx.work / "changes"),
                                          progress="quiet", plots=False, device=device, **{**overrides, **extra})
                s = run_.summary
                results[label].append((s["train_seconds"], s["accuracy"]))
                ctx.log(f"  changes {label} seed {seed}: {s['train_seconds']:.2f} s, {s['accuracy']:.4f}")
        first = prev = None
        for label, _ in CONFIGS:
            t = median([r[0] for r in results[label]])
            accs = [r[1] * 100 for r in results[label]]
            note = f"acc mean {sum(accs) / len(accs):.2f}, min {min(accs):.2f}"
            if first is not None:
                note = (f"{t / prev:.2f}x previous, " if label.startswith("+") else "") + f"{t / first:.2f}x start; " + note
            rows.append(Row("changes", label, device, t, "s train", len(seeds), ratio=note))
            if first is None:
                first = t
            if first is t or label.startswith("+"):
                prev = t
    return rows
