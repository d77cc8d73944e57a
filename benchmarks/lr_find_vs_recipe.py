"""How often the learning-rate finder's suggestion beats a model's recipe lr, in short runs.

    python benchmarks/lr_find_vs_recipe.py                          # the models below, 1 epoch each, real MNIST
    python benchmarks/lr_find_vs_recipe.py --models best,fast --epochs 2 --seeds 2
    python benchmarks/lr_find_vs_recipe.py --quick                  # made-up data: a smoke test

For each model and seed: `mnistlab.lr_find` (the `mnistlab lr-find` range test, its default 200
steps and rule min10) on the model's recipe, then two runs of the recipe cut to --epochs, one
with the recipe's lr and one with the suggestion (everything else equal; for one-cycle recipes
the suggestion replaces the peak lr). A run "wins" with the higher test accuracy (a tie is
no win). Prints one line per pair and the count: the suggestion beat the recipe in k of n.
Short runs favour a large lr; the count says nothing about full-length recipes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_made_mnist  # noqa: E402

MODELS = ("logistic", "mlp", "cnn-basic", "cnn-bn", "fast", "best")


def compare(model: str, seed: int, common: dict[str, Any], rule: str) -> dict[str, Any]:
    """The range test's suggestion for `model`, and the test accuracy of a short run at each lr."""
    import mnistlab

    found = mnistlab.lr_find(model=model, seed=seed, rule=rule, **{k: v for k, v in common.items() if k != "out"})
    recipe = mnistlab.train(model=model, seed=seed, progress="quiet", plots=False, **common)
    suggested = mnistlab.train(model=model, seed=seed, lr=found.suggestion, progress="quiet", plots=False, **common)
    record = {"model": model, "seed": seed, "recipe_lr": recipe.config["lr"], "suggested_lr": found.suggestion,
              "rule": rule, "recipe_accuracy": recipe.summary["accuracy"],
              "suggested_accuracy": suggested.summary["accuracy"]}
    print(f"{model} seed {seed}: recipe lr {record['recipe_lr']:g} -> {100 * record['recipe_accuracy']:.2f}%, "
          f"suggested lr {found.suggestion:g} -> {100 * record['suggested_accuracy']:.2f}%", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=float, default=1.0, help="length of each run (default 1 epoch)")
    p.add_argument("--rule", default="min10", choices=["min10", "steepest"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=os.environ.get("MNISTLAB_DATA"))
    p.add_argument("--json", type=Path, default=None, help="also write every record here")
    p.add_argument("--quick", action="store_true", help="made-up data, two small models, a third of an epoch")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    records = []
    with tempfile.TemporaryDirectory(prefix="mnistlab-lrfind-") as scratch:
        common: dict[str, Any] = {"out": scratch, "threads": args.threads, "data_dir": args.data_dir,
                                  "epochs": args.epochs}
        if args.quick:
            common.update(data_dir=str(write_made_mnist(Path(scratch) / "data")), epochs=0.3)
            models = models if args.models != ",".join(MODELS) else ["logistic", "fast"]
        for seed in range(args.seeds):
            records += [compare(model, seed, common, args.rule) for model in models]
    wins = sum(r["suggested_accuracy"] > r["recipe_accuracy"] for r in records)
    print(f"the suggestion ({args.rule}) beat the recipe's lr in {wins} of {len(records)} short runs "
          f"({common['epochs']:g} epochs each)")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
