"""`best`'s recipe against the recipe it replaced, and the ablation of its tools, over seeds.

    python benchmarks/best_recipe.py --jobs 2 --runs best:0,before:0,best:1,best:2,no-augment:0,no-rotate:0
    python benchmarks/best_recipe.py --seeds 3                # every candidate, 3 seeds each, one at a time
    python benchmarks/best_recipe.py --candidates '{"ema 0.99": {"ema": 0.99}}' --seeds 1
    python benchmarks/best_recipe.py --quick                  # made-up data, tiny runs: a smoke test

Each candidate is a dict of `mnistlab.train` overrides on top of `best`'s recipe (CANDIDATES):

    best        the recipe as it is: shifts, rotations, scaling, best epoch by valid accuracy
    before      the recipe as it was before the training tools (shifts only, no EMA, best epoch by
                valid loss): its training time, side by side, is the budget `best` must keep
    all-data    the recipe on all 60,000 training images (none held out to validate) for 11
                epochs, about as many steps as 12 epochs of 54,000; the last epoch is the result
    no-augment  the recipe without any augmentation
    no-rotate   the recipe with the shifts but without rotations and scaling
    ema         the recipe with an average of the weights (--ema 0.999) validating and testing

Every run's test split is scored from the checkpoint its test pass used (best.pt), with raw
weights and, with --ema, their average, each without and with TTA (`--tta`). An average never
changes the training (the raw weights of a run with --ema are bit-identical to those of the same
run without it, tests/test_training_tools.py), so "without EMA" is the raw weights of the same
run (caveat: best.pt is the epoch the average's valid accuracy picked), and "without TTA" /
"with TTA" are the same weights scored both ways.

--runs lists CANDIDATE:SEED pairs in the order they start (default: every candidate for each of
--seeds seeds, seeds outer, so a burst of load on a shared machine hits each alike). --jobs N
trains N runs at once in their own processes, with --threads each (default: the cores / N):
with --jobs 2 on two cores, `best:0` and `before:0` train side by side under the same load, and
their training seconds are the comparison the issue asks for.

Prints one line per run and a table (mean and worst test accuracy over seeds, median training
seconds); --json writes every number.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_made_mnist  # noqa: E402

CANDIDATES: dict[str, dict[str, Any]] = {
    "best": {},
    "before": {"rotate": 0, "zoom": 0, "ema": 0, "monitor": "valid_loss"},
    "all-data": {"valid_fraction": 0.0, "epochs": 11},
    "no-augment": {"augment": False},
    "no-rotate": {"rotate": 0, "zoom": 0},
    "ema": {"ema": 0.999},
}
SCORINGS = (("raw", False), ("raw", True), ("average", False), ("average", True))  # (weights, tta)


def score_run(run: Any, weights: str, tta: bool) -> dict[str, Any]:
    """Test metrics of a run's best.pt with its raw weights or their average, with or without TTA."""
    import mnistlab
    from mnistlab.evaluation import run_dataset, split_images
    from mnistlab.scoring import predict_logits, score
    from mnistlab.training.checkpoint import EMA_KEY, build_model_from_checkpoint, load_checkpoint

    if weights == "average":
        return mnistlab.evaluate(run, tta=tta)
    ckpt = load_checkpoint(run.checkpoint_path("best"))
    ckpt.pop(EMA_KEY, None)  # the raw weights, as a run without --ema would be scored
    model = build_model_from_checkpoint(ckpt)
    data = run_dataset(run.config, list(ckpt["data"]["classes"]))
    images, labels = split_images(data, run.config, "test")
    logits = predict_logits(model, images, tuple(ckpt["data"]["mean"]), tuple(ckpt["data"]["std"]), tta=tta)
    return score(logits, labels, list(data.classes))


def train_and_score(name: str, overrides: dict[str, Any], seed: int, common: dict[str, Any]) -> list[dict[str, Any]]:
    """Train one candidate for one seed and score its best.pt every way it has; one record per scoring."""
    import mnistlab

    warnings.simplefilter("ignore")
    run = mnistlab.train(model="best", seed=seed, progress="quiet", plots=False, **{**common, **overrides})
    records = []
    for weights, tta in SCORINGS:
        if weights == "average" and not run.config.get("ema"):
            continue
        m = score_run(run, weights, tta)
        records.append({"candidate": name, "seed": seed, "weights": weights, "tta": tta,
                        "accuracy": m["accuracy"], "train_seconds": run.summary["train_seconds"],
                        "epochs": run.summary["epochs_run"], "best_epoch": run.summary["best_epoch"],
                        "threads": common.get("threads"), "run": str(run.path)})
        print(f"{name} seed {seed} {weights}{' + TTA' if tta else ''}: test accuracy "
              f"{100 * m['accuracy']:.2f}%, {run.summary['train_seconds']:.0f} s of training "
              f"(best epoch {run.summary['best_epoch']})", flush=True)
    return records


def run_all(candidates: dict[str, dict[str, Any]], runs: list[tuple[str, int]], common: dict[str, Any],
            jobs: int = 1) -> list[dict[str, Any]]:
    """Train and score every (candidate, seed) of `runs`, `jobs` at a time; records in the order of `runs`."""
    def one(pair: tuple[str, int]) -> tuple[str, dict[str, Any], int, dict[str, Any]]:
        name, seed = pair
        return name, candidates[name], seed, {**common, "out": str(Path(common["out"]) / f"{name}-seed{seed}")}

    if jobs == 1:
        return [r for pair in runs for r in train_and_score(*one(pair))]
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_and_score, *one(pair)) for pair in runs]
        return [r for f in futures for r in f.result()]


def parse_runs(text: str | None, candidates: dict[str, Any], seeds: list[int]) -> list[tuple[str, int]]:
    """CANDIDATE:SEED,... (default: every candidate for every seed, seeds outer)."""
    if not text:
        return [(name, seed) for seed in seeds for name in candidates]
    pairs = []
    for item in text.split(","):
        name, _, seed = item.strip().rpartition(":")
        if name not in candidates or not seed.isdigit():
            raise SystemExit(f"bad --runs item {item!r}: CANDIDATE:SEED with a candidate of {', '.join(candidates)}")
        pairs.append((name, int(seed)))
    return pairs


def table(records: list[dict[str, Any]]) -> str:
    """One row per (candidate, scoring): seeds, mean and worst accuracy, median training seconds."""
    groups: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["candidate"], r["weights"], r["tta"]), []).append(r)
    lines = ["| candidate | weights | TTA | seeds | mean test acc | worst seed | median train s |",
             "|---|---|---|---:|---:|---:|---:|"]
    for (name, weights, tta), rows in groups.items():
        accs = [100 * r["accuracy"] for r in rows]
        lines.append(f"| {name} | {weights} | {'yes' if tta else 'no'} | {len(rows)} | {statistics.mean(accs):.3f}% "
                     f"| {min(accs):.2f}% | {statistics.median(r['train_seconds'] for r in rows):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", default=None, help='JSON {"name": {train overrides}, ...} (default: CANDIDATES)')
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=None, help="override every candidate's epochs (e.g. a short try)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: the cores / --jobs)")
    p.add_argument("--runs", default=None, metavar="CANDIDATE:SEED,...", help="which runs, in this order")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    p.add_argument("--data-dir", default=os.environ.get("MNISTLAB_DATA"))
    p.add_argument("--out", default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write every record here")
    p.add_argument("--quick", action="store_true", help="made-up data, one epoch, 1 seed: a smoke test")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    candidates = json.loads(args.candidates) if args.candidates else CANDIDATES
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    with tempfile.TemporaryDirectory(prefix="mnistlab-best-") as scratch:
        common: dict[str, Any] = {"out": args.out or scratch, "threads": threads, "data_dir": args.data_dir}
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        if args.quick:
            common.update(data_dir=str(write_made_mnist(Path(scratch) / "data")), epochs=1, eval_batch_size=500)
            seeds = seeds[:1]
        if args.epochs is not None:
            common["epochs"] = args.epochs
        if "epochs" in common:  # --epochs and --quick shorten every candidate, those with their own too
            candidates = {name: {k: v for k, v in o.items() if k != "epochs"} for name, o in candidates.items()}
        records = run_all(candidates, parse_runs(args.runs, candidates, seeds), common, args.jobs)
    print(table(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
