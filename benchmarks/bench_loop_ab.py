"""The hot loop of two commits side by side, in one process: `train_one_epoch` per step, every option off.

    python benchmarks/bench_loop_ab.py --old 7e77ee8 [--reps 41] [--samples 6400]

`mnistlab/training/epoch.py` of `--old` (read with `git show`) and of this tree each train a fresh
model (same seed, same batches) for one pass over --samples MNIST training images, alternating
old/new and new/old repetition by repetition; the table gives the median and best microseconds
per step and new/old ratios. Two models bracket the engine's overhead: `logistic` at batch 64
(the step is mostly Python and dispatch) and the tutorials' DNN (784-128-128-128) at batch 32.
Where bench_engine_ab.py times whole `mnistlab train` processes, this isolates the loop itself.
Needs the real MNIST ($MNISTLAB_DATA).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = {"logistic b64": ("logistic", {}, 64), "dnn b32": ("dnn", {"hidden_dims": (784, 128, 128, 128)}, 32)}


def old_module(rev: str, scratch: Path):
    """mnistlab.training.epoch as it was at `rev`, loaded from a copy of its file."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/mnistlab/training/epoch.py"],
                            check=True, capture_output=True, text=True).stdout
    path = scratch / "epoch_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("epoch_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["epoch_old"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def per_step(module, data, job: tuple, samples: int) -> float:
    import torch

    from mnistlab.data import BatchIterator
    from mnistlab.models import create_model

    name, options, batch = job
    torch.manual_seed(0)
    model = create_model(name, **options)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = BatchIterator(data.train_images[:samples], data.train_labels[:samples], batch_size=batch,
                            mean=data.mean, std=data.std, shuffle=True, seed=0)
    result = module.train_one_epoch(model, iter(batches), optimizer, None, max_steps=len(batches),
                                    label_smoothing=0.0, clip_grad=None, autocast=nullcontext(),
                                    device=torch.device("cpu"), bar=None, epoch=1)
    return result.seconds / result.steps * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="the commit whose training/epoch.py is the baseline")
    p.add_argument("--reps", type=int, default=41)
    p.add_argument("--samples", type=int, default=6400, help="training images per repetition")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=os.environ.get("MNISTLAB_DATA"))
    args = p.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from mnistlab.data import load_dataset
    from mnistlab.training import epoch as new

    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", args.data_dir)
    with tempfile.TemporaryDirectory() as scratch:
        old = old_module(args.old, Path(scratch))
    times: dict[tuple[str, str], list[float]] = {(j, k): [] for j in JOBS for k in ("old", "new")}
    for rep in range(args.reps):
        for job, spec in JOBS.items():
            order = (("old", old), ("new", new)) if rep % 2 == 0 else (("new", new), ("old", old))
            for side, module in order:
                times[(job, side)].append(per_step(module, data, spec, args.samples))
    print(f"| job | old us/step (median, best) | new us/step (median, best) | new/old median | new/old best |")
    print("|---|---:|---:|---:|---:|")
    for job in JOBS:
        o, n = times[(job, "old")], times[(job, "new")]
        print(f"| {job} | {statistics.median(o):.1f}, {min(o):.1f} | {statistics.median(n):.1f}, {min(n):.1f} | "
              f"{statistics.median(n) / statistics.median(o):.3f} | {min(n) / min(o):.3f} |")
    print(f"{args.reps} repetitions each, alternating, {args.threads} thread(s), --old {args.old} vs {REPO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
