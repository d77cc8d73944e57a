"""`mnistlab tune`: hyperparameter search with Optuna over normal runs (the `tune` extra)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mnistlab.cli.common import add_train_flags
from mnistlab.errors import UsageError

# The tune command's own flags (argparse dests): everything else is a train setting fixed for all trials.
TUNE_DESTS = {"param", "trials", "metric", "direction", "sampler", "sampler_seed", "pruner", "study", "storage",
              "workers", "show", "plot", "worker"}


DESCRIPTION = (
    "Search the --param space with Optuna: each trial is a normal run folder runs/<study>/trial-NNNN/, "
    "trials.csv and best.json are rewritten after each trial, and rerunning the same command continues "
    "the study up to --trials in total. Every train flag is accepted and fixed for all trials. Several "
    "processes, here (--workers) or on other machines (the same command with the same --storage), "
    "share one study and together run exactly --trials trials. Needs mnistlab[tune]."
)
EPILOG = (
    "examples:\n"
    "  mnistlab tune --model dnn --trials 20 --param lr=log:1e-4:1e-1 --param batch_size=int:32:256:log \\\n"
    "      --param set.dropout_ratio=float:0:0.5 --param optimizer=cat:adam,sgd,adamw --epochs 10\n"
    "  mnistlab tune --model dnn --trials 30 --param lr=log:1e-4:1e-1 --study dnn-search \\\n"
    "      --storage postgresql://user:pass@db-host/optuna --workers 2     # on each machine\n"
    "  mnistlab tune --study dnn-search --storage postgresql://user:pass@db-host/optuna --show --plot s.png\n"
    "--param kinds: log:LOW:HIGH, float:LOW:HIGH[:STEP], int:LOW:HIGH[:STEP|log], cat:A,B,... "
    "(';' between values that hold commas); NAME is a train setting or set.OPTION (a model option).\n"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `tune` sub-command."""
    from mnistlab.tune.search import METRICS, PRUNERS, SAMPLERS

    p = sub.add_parser("tune", help="search hyperparameters with Optuna: pruning, resume, many processes or machines",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("search")
    g.add_argument("--param", action="append", default=[], metavar="NAME=KIND:ARGS",
                   help="a setting to search and its range, repeatable: lr=log:1e-4:1e-1, "
                        "set.dropout_ratio=float:0:0.5")
    g.add_argument("--trials", type=int, default=None, metavar="N", help="trials in the study in total (all processes)")
    g.add_argument("--metric", default="valid_loss", choices=METRICS,
                   help="what a trial is judged by: its value at the run's best epoch (default valid_loss)")
    g.add_argument("--direction", default=None, choices=("minimize", "maximize"),
                   help="default: minimize a loss, maximize an accuracy")
    g.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="how the next trial is chosen (default tpe)")
    g.add_argument("--sampler-seed", type=int, default=None, metavar="N", help="seed the sampler (one process)")
    g.add_argument("--pruner", default="median", choices=PRUNERS,
                   help="stops bad trials early from their per-epoch metric (default median; none: never)")
    g.add_argument("--study", default=None, metavar="NAME", help="the study's name and folder (default MODEL-tune)")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="an Optuna RDB URL: sqlite:///FILE, postgresql://..., mysql://... "
                        "(default: sqlite in runs/<study>/study.db)")
    g.add_argument("--workers", "-w", type=int, default=1, metavar="K",
                   help="trial processes on this machine, the cores shared out as sweep does (default 1)")
    g.add_argument("--show", action="store_true", help="print the study's trials and best trial, and stop")
    g.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write the optimisation history and parameter importances (Optuna's plots)")
    g.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: settings on stdin
    add_train_flags(p)
    p.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> Any:
    from mnistlab.sweep import base_config_from_args
    from mnistlab.tune.search import TuneSettings, default_direction
    from mnistlab.tune.study import storage_url

    for flag in ("name", "resume"):
        if getattr(args, flag, None):
            raise UsageError(f"tune has no --{flag}: the study is --study NAME, its trials are named trial-NNNN, "
                             "and rerunning the same command continues it")
    if args.trials is None and not args.show:
        raise UsageError("tune needs --trials N: how many trials the study has in total")
    train_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in TUNE_DESTS})
    base = base_config_from_args(train_args)
    out = base.pop("out", None) or "runs"
    study = args.study or f"{base.get('model') or 'fast'}-tune"
    from mnistlab.runs import check_run_name

    check_run_name(study)
    return TuneSettings(
        study=study, storage=storage_url(args.storage, out, study), out=out, trials=args.trials or 0,
        params=list(args.param), base=base, metric=args.metric,
        direction=args.direction or default_direction(args.metric), sampler=args.sampler,
        sampler_seed=args.sampler_seed, pruner=args.pruner, workers=args.workers,
        threads=base.pop("threads", None), progress=base.pop("progress", None) or "bar",
        mlflow=base.pop("mlflow", None), mlflow_checkpoints=bool(base.pop("mlflow_checkpoints", False)),
    )


def _log(progress: str) -> Any:
    def log(line: str) -> None:
        if progress != "quiet" or line.startswith("warning:"):
            print(line, file=sys.stderr, flush=True)

    return log


def _emit(progress: str) -> Any:
    def emit(event: dict[str, Any]) -> None:
        if progress == "jsonl":
            print(json.dumps(event, default=str), flush=True)

    return emit


def run(args: argparse.Namespace) -> int:
    from mnistlab.tune import records
    from mnistlab.tune.search import TuneSettings, run_tune, search, show

    if args.worker:
        s = TuneSettings.from_json(sys.stdin.read())
        search(s, _log(s.progress), _emit(s.progress))
        return 0
    s = _settings(args)
    if args.show:
        best = show(s, args.plot)
    else:
        best = run_tune(s, _log(s.progress), _emit(s.progress))
        if args.plot:
            show(s, args.plot, table=False)
    if s.progress == "jsonl":
        print(json.dumps({"event": "result", **(best or {})}, default=str), flush=True)
    else:
        print(records.best_line(best), flush=True)
    return 0 if best is not None or args.show else 1
