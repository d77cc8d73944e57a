"""The training engine of two commits side by side: per-epoch cost of whole `mnistlab train` runs.

    python benchmarks/bench_engine_ab.py --old 2d9f186 [--new WORKTREE_OR_REV] [--rounds 5]

Each round runs every job once with the old code and once with the new (in alternating order,
each run its own process, the same data and threads), and reads the run's own numbers:
train_seconds (the optimizer steps) and epoch_seconds (the whole epoch: steps, validation,
checkpoint, metrics.csv, progress). The table gives medians and new/old ratios.

Jobs: `fast` (the default command) and the tutorials' DNN pipeline (784-128-128-128, BN,
dropout, Adam 1e-3, batch 32, one epoch). Needs the real MNIST (MNISTLAB_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = {
    "fast (default)": [],
    "dnn b32, 1 epoch": ["--model", "dnn", "--set", "hidden_dims=784,128,128,128", "--batch-size", "32",
                         "--epochs", "1", "--optimizer", "adam", "--lr", "1e-3"],
}


def source_tree(ref: str, scratch: Path) -> Path:
    """A folder holding the code of `ref`: a worktree path as is, else a detached worktree of that commit."""
    if Path(ref).is_dir():
        return Path(ref).resolve()
    path = scratch / f"tree-{ref}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)
    return path


def one_run(tree: Path, flags: list[str], out: Path, threads: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "mnistlab", "train", *flags, "--out", str(out), "--name", "run", "--no-plots",
           "--quiet", "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {tree}:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "run" / "summary.json").read_text())
    lines = (out / "run" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    epoch_seconds = sum(float(dict(zip(header, row.split(",")))["epoch_seconds"]) for row in lines[1:])
    return {"train_seconds": summary["train_seconds"], "epoch_seconds": epoch_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="commit (or worktree folder) of the old engine")
    parser.add_argument("--new", default=str(REPO), help="commit or folder of the new engine (default: this tree)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("MNISTLAB_DATA"):
        print("set MNISTLAB_DATA to the folder holding mnist/ (e.g. ../shared/data)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        trees = {"old": source_tree(args.old, scratch), "new": source_tree(args.new, scratch)}
        times: dict[tuple[str, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for j, (job, flags) in enumerate(JOBS.items()):
                for side in order:
                    out = scratch / f"{side}-{r}-{j}"  # one folder per run: a reused one would name it run-2
                    times.setdefault((job, side), []).append(one_run(trees[side], flags, out, args.threads))
        for side, tree in trees.items():
            if tree.is_relative_to(scratch):
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    print(f"| job | measure | old (median of {args.rounds}) | new | new/old |")
    print("| --- | --- | --- | --- | --- |")
    for job in JOBS:
        for measure in ("train_seconds", "epoch_seconds"):
            old = statistics.median(t[measure] for t in times[(job, "old")])
            new = statistics.median(t[measure] for t in times[(job, "new")])
            print(f"| {job} | {measure} | {old:.3f} s | {new:.3f} s | {new / old:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
