"""Accuracy sweep of `fast` recipe variants over seeds: how the default recipe was chosen.

    python benchmarks/sweep_fast.py '{"b128_0.9": {"batch_size": 128, "epochs": 0.9}}' --seeds 5 --threads 1

Each variant is a dict of `mnistlab.train` overrides (model options under "model_options").
Seeds are the outer loop and variants the inner one (interleaved, so a burst of load hits
every variant alike). Prints one line per run and a summary line per variant: mean and
worst test accuracy, median train_seconds.

--threads 1 is how the sweeps in docs/benchmarks.md ran: accuracy does not depend on the
thread count (beyond bf16 rounding noise), and on the shared 2-vCPU machine a 1-thread
process is not stalled by OpenMP threads spinning against other users' processes, so a
sweep finishes in minutes even under load. Its train_seconds are 1-thread figures: compare
speed with `python benchmarks/run.py --only changes` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import warnings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", help='JSON object {"name": {overrides}, ...}')
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds first-seed .. first-seed+seeds-1 (check a recipe chosen on 0-4 on other seeds)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=os.environ.get("MNISTLAB_DATA"))
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import mnistlab

    variants = json.loads(args.variants)
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory(prefix="mnistlab-sweep-") as out:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name, overrides in variants.items():
                overrides = {"model": "fast", **overrides}
                run = mnistlab.train(seed=seed, out=out, progress="quiet", plots=False, threads=args.threads,
                                     data_dir=args.data_dir, **overrides)
                s = run.summary
                results[name].append((s["accuracy"], s["train_seconds"]))
                print(f"{name} seed {seed}: acc {s['accuracy']:.4f}, train {s['train_seconds']:.2f} s", flush=True)
    for name, v in results.items():
        accs = [a for a, _ in v]
        print(f"RESULT {name:24s} mean {100 * sum(accs) / len(accs):.3f}  min {100 * min(accs):.2f}  "
              f"train median {statistics.median(t for _, t in v):.2f} s ({len(v)} seeds)")


if __name__ == "__main__":
    main()
