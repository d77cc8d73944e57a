"""4. Latency: one-image forward of `fast`, `mnistlab predict RUN img.png`, and `mnistlab --help`.

The forward is timed call by call (p50 and p99 of many single-image calls, fp32, inference
mode, as `Predictor` runs it). The two commands are whole processes, as a user types them:
`predict` pays for Python, torch, the checkpoint and the image preprocessing; `--help`
must not import torch at all (checked in the same run).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from common import Context, Row, load_mnist, median, mnistlab_command, run_command, short_run, sync

TARGET_HELP_S = 0.3


def run(ctx: Context) -> list[Row]:
    import torch
    from PIL import Image

    from mnistlab.predict import Predictor

    rows: list[Row] = []
    data = load_mnist(ctx)
    run_dir = short_run(ctx, "latency-run")
    img_path = ctx.work / "digit.png"
    Image.fromarray(data.test_images[0, 0].numpy()).save(img_path)

    for device in ctx.devices:
        predictor = Predictor.from_run(run_dir)
        model = predictor.model.to(device).eval()
        x = ((data.test_images[:1].float() / 255 - predictor.mean) / predictor.std).to(device)
        calls = 2000 if not ctx.quick else 50
        lat = np.empty(calls)
        with torch.inference_mode():
            for _ in range(20):  # warm-up: first calls allocate and pick kernels
                model(x)
            for i in range(calls):
                sync(device)
                t0 = time.perf_counter()
                model(x)
                sync(device)
                lat[i] = time.perf_counter() - t0
        rows.append(Row("4 latency", "fast one-image forward p50", device, float(np.percentile(lat, 50)) * 1e3, "ms", calls))
        rows.append(Row("4 latency", "fast one-image forward p99", device, float(np.percentile(lat, 99)) * 1e3, "ms", calls,
                        ratio=f"{np.percentile(lat, 99) / np.percentile(lat, 50):.1f}x p50"))

    reps = max(ctx.reps, 5)
    predict_walls, help_walls, imports = [], [], []
    for _ in range(reps):
        predict_walls.append(run_command([*mnistlab_command(), "predict", str(run_dir), str(img_path)])[0])
        help_walls.append(run_command([*mnistlab_command(), "--help"])[0])
        imports.append(run_command([sys.executable, "-c", "import torch"])[0])
    probe = (
        "import sys\nfrom mnistlab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    torch_free = run_command([sys.executable, "-c", probe])[1].strip().endswith("NO-TORCH")
    rows += [
        Row("4 latency", "`mnistlab predict RUN img.png` wall", "cpu", median(predict_walls), "s", reps,
            ratio=f"`import torch` alone {median(imports):.2f} s"),
        Row("4 latency", f"`mnistlab --help` wall ({'torch not imported' if torch_free else 'IMPORTS TORCH'})", "cpu",
            median(help_walls), "s", reps, target=f"< {TARGET_HELP_S} s, no torch",
            met=ctx.verdict(torch_free and median(help_walls) < TARGET_HELP_S)),
    ]
    return rows
