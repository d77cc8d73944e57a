"""`mnistlab text train` and `mnistlab text predict`: recurrent text classifiers on labelled CSVs."""

from __future__ import annotations

import argparse
import json

from mnistlab.cli.common import add_optimisation_flags, add_run_flags
from mnistlab.errors import UsageError

S = argparse.SUPPRESS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="text classification: train an RNN/LSTM/GRU on a labelled CSV, predict sentences",
        description="Text classification on a CSV with a text column and a label column.",
        epilog=(
            "examples:\n"
            "  mnistlab text train --data builtin:sentiment --model lstm --bidirectional --dropout 0.5 --epochs 20\n"
            "  mnistlab text train --data imdb.csv --text-column review --label-column sentiment --max-len 256\n"
            "  mnistlab text predict runs/text-lstm-bi \"the movie was wonderful\" \"최악의 서비스였다\"\n"
            "  mnistlab evaluate runs/text-lstm-bi\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="text_command", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    t = tsub.add_parser(
        "train", help="train a text classifier and write a run folder",
        description="Train a recurrent text classifier. The CSV is split by --seed into test "
        "(--test-fraction), valid (--valid-fraction of the rest) and train; the vocabulary comes from train only.",
    )
    g = t.add_argument_group("data")
    g.add_argument("--data", metavar="FILE.csv",
                   help="a CSV with a header row, or builtin:sentiment (the shipped English/Korean set); "
                        "required unless --resume")
    g.add_argument("--text-column", default=S, help="column holding the text (default: text)")
    g.add_argument("--label-column", default=S, help="column holding the label (default: label)")
    g.add_argument("--max-len", type=int, default=S, help="tokens kept per text, the first ones (default 200)")
    g.add_argument("--vocab-size", type=int, default=S, help="vocabulary size incl. <pad>, <unk> (default 20000)")
    g.add_argument("--min-freq", type=int, default=S, help="drop words seen fewer times in train (default 1)")
    g.add_argument("--test-fraction", type=float, default=S, help="held-out test share of all rows (default 0.2)")
    g.add_argument("--valid-fraction", type=float, default=S, metavar="F",
                   help="validation share of the non-test rows (default 0.2)")
    g = t.add_argument_group("model")
    g.add_argument("--model", default=S, choices=["rnn", "lstm", "gru"], help="recurrent cell (default lstm)")
    g.add_argument("--bidirectional", action="store_true", default=S,
                   help="read both ways; the classifier sees both final states")
    g.add_argument("--embed-dim", type=int, default=S, help="word embedding size (default 64)")
    g.add_argument("--hidden", type=int, default=S, help="hidden state size (default 64)")
    g.add_argument("--layers", type=int, default=S, help="stacked recurrent layers (default 1)")
    g.add_argument("--dropout", type=float, default=S, help="dropout before the classifier and between layers")
    add_optimisation_flags(t.add_argument_group(
        "optimisation (defaults: adam, lr 3e-3, 10 epochs, batch 32, clip-grad 1)"))
    add_run_flags(
        t.add_argument_group("hardware and output"),
        resume_help="continue a text run from its last checkpoint (with --epochs: train it longer)",
        name_help="run name (default text-MODEL[-bi]; -2, -3... if taken)",
    )
    t.set_defaults(handler=run_train)

    q = tsub.add_parser(
        "predict", help="label sentences with a trained text run",
        description="One line per sentence: the label and its confidence (softmax probability).",
    )
    q.add_argument("run", metavar="RUN", help="a text run folder, e.g. runs/text-lstm")
    q.add_argument("texts", metavar="TEXT", nargs="+", help="sentences to classify")
    q.add_argument("--checkpoint", default="best", choices=["best", "last"])
    q.add_argument("--json", action="store_true", help="one JSON object per sentence (JSON lines)")
    q.set_defaults(handler=run_predict)


_NOT_SETTINGS = {"command", "handler", "debug", "text_command", "data"}


def run_train(args: argparse.Namespace) -> int:
    from mnistlab.text.engine import train_text

    settings = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
    if not args.data and not settings.get("resume"):
        raise UsageError("mnistlab text train needs --data FILE.csv (or --resume RUN)")
    train_text(args.data or "builtin:sentiment", **settings)  # a resumed run reads its own data setting
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from mnistlab.text.engine import predict_text

    for r in predict_text(args.run, args.texts, checkpoint=args.checkpoint):
        if args.json:
            print(json.dumps(r, ensure_ascii=False))
        else:
            print(f"{r['label']}\t{r['confidence']:.4f}\t{r['text']}")
    return 0
