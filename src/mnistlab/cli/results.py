"""`mnistlab compare` and `mnistlab sweep`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Iterator

from mnistlab.cli.common import add_train_flags


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `compare` and `sweep` sub-commands."""
    p = sub.add_parser(
        "compare",
        help="compare runs side by side (table, CSV or Markdown)",
        description="One row per run: name, model, key options, parameters, epochs, training time, best valid "
        "accuracy, test accuracy, macro F1 and AUC. RUN may be a run folder, a folder of runs (a sweep) or a glob.",
        epilog=(
            "examples:\n"
            "  mnistlab compare runs/*\n"
            "  mnistlab compare runs/dnn-sweep --sort test_accuracy --format markdown\n"
            "  mnistlab compare runs/cnn-basic runs/fast --plot valid.png\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, folders of runs or globs")
    p.add_argument("--format", "-f", default="table", choices=["table", "csv", "markdown"])
    p.add_argument("--sort", "-s", default=None, metavar="KEY",
                   help="test_accuracy, f1, auc, best_valid_accuracy (descending); train_seconds, name, model, "
                        "parameters, epochs (ascending)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="overlay the runs' valid-accuracy curves")
    p.set_defaults(handler=run_compare)

    p = sub.add_parser(
        "sweep",
        help="train the cartesian product of a grid of settings, N runs at a time",
        description=(
            "Train one run per combination of the --grid values under runs/<sweep>/<run>/, N processes at a "
            "time, then write comparison.md, comparison.csv and test_accuracy.png in the sweep folder. Grid keys "
            "are train settings (lr, optimizer, init, batch_size, ...) or model options (anything else). "
            "Rerunning the same command skips completed runs and resumes interrupted ones; runs trained with "
            "other settings than the command's are never reused (the sweep refuses and names the changes)."
        ),
        epilog=(
            "examples:\n"
            "  mnistlab sweep --model dnn --set hidden_dims=784,128,128,128 --grid init=gaussian,xavier,kaiming,zeros\n"
            "  mnistlab sweep --model dnn --grid batchnorm=true,false --grid dropout=true,false --epochs 5\n"
            "  mnistlab sweep --model cnn-strided --grid optimizer=sgd,adam --grid lr=0.01,0.1 --workers 2\n"
            "  (values holding commas: separate them with ';', e.g. --grid 'hidden_dims=784,128;784,512')\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grid", "-g", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="a setting and its values; repeat for more keys (the runs are every combination)")
    p.add_argument("--workers", "-w", type=int, default=None, metavar="N",
                   help="runs trained at the same time (default: half the CPU cores, at least 1)")
    add_train_flags(p)
    p.set_defaults(handler=run_sweep)


def run_compare(args: argparse.Namespace) -> int:
    """Print the comparison table; notes about skipped arguments go to stderr."""
    from mnistlab.compare import compare_runs, format_rows, plot_valid_curves
    from mnistlab.errors import MnistlabError

    rows, notes = compare_runs(args.runs, sort=args.sort)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not rows:
        raise MnistlabError("no run folders found in " + " ".join(args.runs))
    sys.stdout.write(format_rows(rows, args.format))
    if args.plot:
        path = plot_valid_curves([r["path"] for r in rows], args.plot)
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; exit 1 when any run failed (after all the others finished)."""
    from mnistlab.compare import format_rows
    from mnistlab.errors import UsageError
    from mnistlab.sweep import base_config_from_args, parse_grid
    from mnistlab.sweep import run_sweep as sweep

    if getattr(args, "resume", None):
        raise UsageError("sweep has no --resume: rerun the same sweep command to finish an interrupted sweep")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"bad --workers {args.workers}: expected a whole number >= 1")
    grid = parse_grid(args.grid)
    base = base_config_from_args(args)
    sweep_name = base.pop("name", None)
    out = base.pop("out", None) or "runs"
    base.pop("resume", None)
    base.pop("progress", None)
    threads = base.get("threads")
    if base.get("mlflow"):
        from mnistlab.sweep import plan_sweep

        plan_sweep(base, grid)  # a bad grid is refused before the MLflow parent run exists
    with _sweep_tracking(base, grid, sweep_name or f"{base.get('model') or 'fast'}-sweep") as parent:
        result = sweep(base, grid, sweep_name=sweep_name, out=out, workers=args.workers, threads=threads,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
        parent.failed = bool(result.failed)
    sys.stdout.write(format_rows(result.rows, "table"))
    print(f"wrote {result.path / 'comparison.md'}, comparison.csv, test_accuracy.png", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} of {len(result.runs)} runs failed: "
              + ", ".join(r.name for r in result.failed), file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _sweep_tracking(base: dict[str, Any], grid: list[tuple[str, list[str]]], name: str) -> Iterator[Any]:
    """With --mlflow: one MLflow parent run that the sweep's runs nest under (they log themselves)."""
    if not base.get("mlflow"):
        yield argparse.Namespace(failed=False)
        return
    from mnistlab.tracking import base_tags, parent_run

    tags = {**base_tags(str(base.get("model") or "fast"), str(base.get("dataset") or "mnist")), "kind": "sweep"}
    params = {f"grid.{key}": ";".join(values) for key, values in grid}
    warn = lambda message: print(f"warning: {message}", file=sys.stderr, flush=True)  # noqa: E731
    with parent_run(base["mlflow"], name, tags=tags, params=params, warn=warn) as parent:
        yield parent
