"""A TPE search of the DNN against the grid of docs/experiments.md, on the same budget, side by side.

    python benchmarks/tune_vs_grid.py                       # the full comparison: the 8 grid runs, 30 trials
    python benchmarks/tune_vs_grid.py --trials 4 --epochs 1 # a small version (a smoke test of the setup)

The grid is docs/experiments.md's sweeps 1 and 2 as documented there (init x 4, then BatchNorm x dropout,
8 runs); the search is `mnistlab tune` over the same choices plus the learning rate and the dropout ratio,
TPE with the median pruner, judged like the grid's runs by the validation loss at the best epoch. Both use
the DNN 784-128-128-128, batch 128, patience 3, the same --epochs, --workers processes, on the real MNIST
($MNISTLAB_DATA). They run one after the other in this one command, each timed from start to end; the
table reports for each its best run by valid loss (and that run's test accuracy) and the wall time.
Needs the `tune` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DNN = ["--model", "dnn", "--set", "hidden_dims=784,128,128,128", "--batch-size", "128"]
GRIDS = {  # docs/experiments.md, sweeps 1 and 2
    "dnn-init": ["--grid", "init=gaussian,xavier,kaiming,zeros"],
    "dnn-switches": ["--grid", "batchnorm=true,false", "--grid", "dropout=true,false"],
}
SPACE = ["--param", "init=cat:gaussian,xavier,kaiming,zeros", "--param", "set.batchnorm=cat:true,false",
         "--param", "set.dropout=cat:true,false", "--param", "set.dropout_ratio=float:0.1:0.5",
         "--param", "lr=log:1e-4:1e-2"]


def mnistlab(*args: str) -> float:
    """Run `python -m mnistlab ARGS`; its wall time in seconds (raises on failure)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mnistlab", *args], check=True, env=env)
    return time.perf_counter() - start


def run_result(folder: Path) -> tuple[float, float]:
    summary = json.loads((folder / "summary.json").read_text())
    return float(summary["best_valid_loss"]), float(summary["accuracy"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--epochs", default="10")
    p.add_argument("--workers", default="2")
    p.add_argument("--out", default="runs/tune-vs-grid")
    args = p.parse_args()
    out = Path(args.out)
    common = [*DNN, "--epochs", args.epochs, "--workers", args.workers, "--out", str(out), "--no-plots"]

    grid_seconds = sum(mnistlab("sweep", "--name", name, *grid, *common) for name, grid in GRIDS.items())
    grid_runs = [p.parent for name in GRIDS for p in (out / name).glob("*/summary.json")]
    grid_best = min(grid_runs, key=lambda r: run_result(r)[0])

    tune_seconds = mnistlab("tune", "--study", "dnn-tpe", "--trials", str(args.trials), *SPACE, "--sampler", "tpe",
                            "--pruner", "median", "--metric", "valid_loss", *common)
    best = json.loads((out / "dnn-tpe" / "best.json").read_text())
    tune_best = Path(best["run_folder"])

    rows = [("grid (docs/experiments.md sweeps 1+2)", len(grid_runs), grid_best, grid_seconds),
            (f"TPE, {args.trials} trials, median pruner", args.trials, tune_best, tune_seconds)]
    print(f"\nMeasured with `python benchmarks/tune_vs_grid.py --trials {args.trials} --epochs {args.epochs} "
          f"--workers {args.workers}` on {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}.\n")
    print("| search | runs | best run (valid loss) | its best valid loss | its test accuracy | wall time |")
    print("|---|---:|---|---:|---:|---:|")
    for label, n, run, seconds in rows:
        loss, acc = run_result(run)
        print(f"| {label} | {n} | {run.name} | {loss:.4f} | {acc:.4f} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
