"""2. Time to 99%: `mnistlab train --model fast` with its recipe, seeds 0..4, as a user runs it.

Each seed is one `mnistlab train` process (its default settings; only --seed, --out and
--quiet given), so its wall time includes interpreter start, imports, data loading,
training, evaluation, checkpoints and plots. summary.json gives train_seconds (the loop
alone) and the test accuracy. The breakdown of the wall time comes from the same script
run: the import cost (a process that only imports what `train` imports) and a
`--no-plots` run per repetition, interleaved with the default runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from common import Context, Row, median, mnistlab_command, run_command

SEEDS = (0, 1, 2, 3, 4)
TARGET_TRAIN_S, TARGET_WALL_S, TARGET_MEAN, TARGET_MIN = 1.0, 10.0, 0.990, 0.989


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    seeds = SEEDS if not ctx.quick else (0, 1)
    for device in ctx.devices:
        out = ctx.work / f"t99-{device}"
        shutil.rmtree(out, ignore_errors=True)
        base = [*mnistlab_command(), "train", "--data-dir", ctx.data_dir, "--out", str(out), "--quiet",
                "--device", device]
        if ctx.quick:
            base += ["--epochs", "0.1", "--eval-batch-size", "500"]
        walls, walls_noplots, imports, summaries, passive = [], [], [], [], []
        # OpenMP threads spin while they wait; on a shared, oversubscribed machine a spinning
        # thread steals the core its partner needs. PASSIVE makes them sleep: compared here.
        passive_env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        for i, seed in enumerate(seeds):
            wall, _ = run_command([*base, "--seed", str(seed), "--name", f"seed{seed}"])
            walls.append(wall)
            summaries.append(json.loads((out / f"seed{seed}" / "summary.json").read_text()))
            if i < ctx.reps:
                wall, _ = run_command([*base, "--seed", str(seed), "--name", f"noplots{seed}", "--no-plots"])
                walls_noplots.append(wall)
                wall, _ = run_command([sys.executable, "-c", "import torch, mnistlab.training.engine, mnistlab.cli"])
                imports.append(wall)
                run_command([*base, "--seed", str(seed), "--name", f"passive{seed}", "--no-plots"], env=passive_env)
                passive.append(json.loads((out / f"passive{seed}" / "summary.json").read_text())["train_seconds"])
            ctx.log(f"  t99 {device} seed {seed}: train {summaries[-1]['train_seconds']:.2f} s, "
                    f"acc {summaries[-1]['accuracy']:.4f}, wall {walls[-1]:.2f} s")
        accs = [s["accuracy"] for s in summaries]
        trains = [s["train_seconds"] for s in summaries]
        totals = [s["total_seconds"] for s in summaries]
        n = len(seeds)
        mean_acc, min_acc = sum(accs) / n, min(accs)
        seed_list = " ".join(f"{a * 100:.2f}" for a in accs)
        rows += [
            Row("2 time to 99%", "fast: train_seconds (training loop)", device, median(trains), "s", n,
                target=f"<= {TARGET_TRAIN_S} s", met=ctx.verdict(median(trains) <= TARGET_TRAIN_S)),
            Row("2 time to 99%", f"fast: test accuracy, mean (seeds: {seed_list})", device, mean_acc * 100, "%", n,
                target=f">= {TARGET_MEAN * 100:.1f}", met=ctx.verdict(mean_acc >= TARGET_MEAN)),
            Row("2 time to 99%", "fast: test accuracy, worst seed", device, min_acc * 100, "%", n,
                target=f">= {TARGET_MIN * 100:.1f}", met=ctx.verdict(min_acc >= TARGET_MIN)),
            Row("2 time to 99%", "`mnistlab train` wall (defaults, plots on)", device, median(walls), "s", n,
                target=f"<= {TARGET_WALL_S:g} s", met=ctx.verdict(median(walls) <= TARGET_WALL_S)),
            Row("2 time to 99%", "  of which: imports (torch + mnistlab)", device, median(imports), "s", len(imports),
                ratio=f"{median(imports) / median(walls):.0%} of wall"),
            Row("2 time to 99%", "  of which: inside train() (data, loop, eval, checkpoints, plots)", device,
                median(totals), "s", n, ratio=f"{median(totals) / median(walls):.0%} of wall"),
            Row("2 time to 99%", "  of which: training loop", device, median(trains), "s", n,
                ratio=f"{median(trains) / median(walls):.0%} of wall"),
            Row("2 time to 99%", "  of which: plots + report (wall minus --no-plots wall)", device,
                max(0.0, median(walls) - median(walls_noplots)), "s", len(walls_noplots),
                ratio=f"--no-plots wall {median(walls_noplots):.2f} s"),
            Row("2 time to 99%", "fast: train_seconds with OMP_WAIT_POLICY=PASSIVE", device, median(passive), "s",
                len(passive), ratio=f"{median(passive) / median(trains[:len(passive)]):.2f}x default (same seeds)"
                + (" - but this run already used PASSIVE (--omp-passive)" if os.environ.get("OMP_WAIT_POLICY") == "PASSIVE" else "")),
        ]
    return rows
