"""`mnistlab models` and `mnistlab summary MODEL`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list every model with its parameter count and training recipe")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'cnn-*'")
    p.set_defaults(handler=run_models)

    p = sub.add_parser("summary", help="per-layer table of a model (output shapes, parameters)")
    p.add_argument("model", metavar="MODEL", help="a zoo model name, or your own: path/to/file.py:NAME")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option, repeatable")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--num-classes", type=int, default=10)
    p.set_defaults(handler=run_summary)


def _recipe_text(recipe: dict) -> str:
    keys = ["optimizer", "lr", "batch_size", "epochs", "scheduler", "patience", "label_smoothing", "init"]
    short = {"batch_size": "batch", "label_smoothing": "smooth"}
    return " ".join(f"{short.get(k, k)}={recipe[k]:g}" if isinstance(recipe[k], float) else f"{short.get(k, k)}={recipe[k]}"
                    for k in keys if k in recipe)


def run_models(args: argparse.Namespace) -> int:
    from mnistlab.models import count_parameters, create_model, get_model_info, list_models

    names = list_models(args.pattern)
    rows = []
    for name in names:
        info = get_model_info(name)
        rows.append((name, f"{count_parameters(create_model(name)):,}", info.description, _recipe_text(info.recipe)))
    w0 = max([5] + [len(r[0]) for r in rows])
    w1 = max([10] + [len(r[1]) for r in rows])
    print(f"{'model':<{w0}}  {'parameters':>{w1}}  description")
    for name, params, desc, recipe in rows:
        print(f"{name:<{w0}}  {params:>{w1}}  {desc}")
        print(f"{'':<{w0}}  {'':>{w1}}  recipe: {recipe}")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from mnistlab.models import create_model, parse_set_flags, summarize
    from mnistlab.models.usercode import build_user_model, is_file_model, load_user_model, resolve_user_options

    shape = {"num_classes": args.num_classes, "in_channels": args.in_channels, "image_size": args.image_size}
    if is_file_model(args.model):  # named on the command line: the user's own code, imported on purpose
        user = load_user_model(args.model)
        model = build_user_model(user, resolve_user_options(user, parse_set_flags(args.set)), **shape)
    else:
        model = create_model(args.model, **shape, **parse_set_flags(args.set))
    print(summarize(model, (1, args.in_channels, args.image_size, args.image_size)))
    return 0
