"""`mnistlab lr-find`: the learning-rate range test, and with --apply a training run at the suggested rate."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from mnistlab.cli.common import add_train_flags, config_from_args

# This command's own flags (the others are train's, and make the config the test runs).
_OWN = ("apply", "start_lr", "end_lr", "steps", "rule", "plot", "json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test: the loss against an exponentially growing lr, and a suggested lr",
        description=(
            "Train a fresh copy of the model (nothing is saved) for --steps optimizer steps, the learning "
            "rate growing exponentially from --start-lr to --end-lr, with the train flags' data, batch, "
            "optimizer and loss. The loss is smoothed and the test stops when it explodes. Writes the plot "
            "(--plot, default lr-find.png), prints the suggested lr and the rule; --apply then trains with it."
        ),
        epilog=(
            "examples:\n"
            "  mnistlab lr-find --model best\n"
            "  mnistlab lr-find --model cnn-bn --batch-size 128 --rule steepest\n"
            "  mnistlab lr-find --model best --apply --epochs 3   # then: mnistlab train ... --lr SUGGESTED\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("the range test")
    g.add_argument("--start-lr", type=float, default=1e-7, help="the first step's lr (default 1e-7)")
    g.add_argument("--end-lr", type=float, default=10.0, help="the last step's lr (default 10)")
    g.add_argument("--steps", type=int, default=200, help="optimizer steps of the test (default 200)")
    g.add_argument("--rule", choices=["min10", "steepest"], default="min10",
                   help="min10: the lr of the lowest smoothed loss / 10 (default); steepest: where it falls fastest")
    g.add_argument("--plot", default="lr-find.png", metavar="FILE.png", help="where the plot goes")
    g.add_argument("--json", action="store_true", help="print the result as one JSON object")
    g.add_argument("--apply", action="store_true", help="then train with the suggested lr (mnistlab train ... --lr)")
    add_train_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.errors import UsageError
    from mnistlab.training.engine import train
    from mnistlab.training.lr_finder import lr_find

    own = {key: getattr(args, key) for key in _OWN}
    if getattr(args, "lr", None) is not None:
        raise UsageError("lr-find finds the lr: leave out --lr (with --apply it trains with the one found)")
    cfg = config_from_args(argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in _OWN}))
    result = lr_find(cfg, start_lr=own["start_lr"], end_lr=own["end_lr"], steps=own["steps"], rule=own["rule"],
                     plot=own["plot"])
    if own["json"]:
        print(json.dumps({**result.to_json(), "plot": own["plot"]}))
    else:
        print(result.describe())
        print(f"wrote {own['plot']}")
    if not own["apply"]:
        if not own["json"]:
            print(f"to train with it: mnistlab train ... --lr {result.suggestion:g} (or lr-find --apply)")
        return 0
    # With --json, stdout holds that one JSON object: the run that follows reports on stderr.
    with contextlib.redirect_stdout(sys.stderr) if own["json"] else contextlib.nullcontext():
        print(f"training with --lr {result.suggestion:g} (the suggestion)", flush=True)
        train(cfg, lr=result.suggestion)
    return 0
