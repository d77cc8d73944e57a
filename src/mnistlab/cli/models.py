"""`mnistlab models` and `mnistlab summary MODEL`."""

from __future__ import annotations

import argparse
from typing import Any

from mnistlab.cli.common import add_data_flags, add_shape_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list every model with its parameter count and training recipe")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'cnn-*'")
    add_data_flags(p, dataset_default="mnist")
    add_shape_flags(p)
    p.set_defaults(handler=run_models)

    p = sub.add_parser("summary", help="per-layer table of a model (output shapes, parameters)")
    p.add_argument("model", metavar="MODEL", help="a zoo model name, or your own: path/to/file.py:NAME")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option, repeatable")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--num-classes", type=int, default=10)
    p.set_defaults(handler=run_summary)


def _recipe_text(recipe: dict) -> str:
    keys = ["optimizer", "lr", "batch_size", "epochs", "scheduler", "patience", "label_smoothing", "clip_grad", "init",
            "augment", "rotate", "zoom", "ema", "monitor"]
    short = {"batch_size": "batch", "label_smoothing": "smooth"}
    return " ".join(f"{short.get(k, k)}={recipe[k]:g}" if isinstance(recipe[k], float) else f"{short.get(k, k)}={recipe[k]}"
                    for k in keys if k in recipe)


def data_shape(args: argparse.Namespace) -> tuple[int, int, int]:
    """(channels, side, classes) of --dataset: from the catalog, else (folder:, csv:) by loading it."""
    from mnistlab.data.catalog import dataset_shape

    shape = dataset_shape(args.dataset, getattr(args, "labels", None))
    if shape is not None and not (getattr(args, "channels", None) or getattr(args, "image_size", None)):
        return shape
    from mnistlab.data import load_dataset
    from mnistlab.data.sources import data_options

    data = load_dataset(args.dataset, getattr(args, "data_dir", None), **data_options(args))
    return data.in_channels, data.image_size, data.num_classes


def _parameters(name: str, shape: tuple[int, int, int]) -> str:
    """The model's parameter count for inputs of `shape`, or the one line saying why it cannot take them."""
    from mnistlab.errors import UsageError
    from mnistlab.models import count_parameters, create_model

    channels, side, classes = shape
    try:
        return f"{count_parameters(create_model(name, in_channels=channels, image_size=side, num_classes=classes)):,}"
    except UsageError as exc:
        return f"cannot take {channels}x{side}x{side}: {str(exc).removeprefix(f'cannot build model {name!r} with options {{}}: ')}"


def run_models(args: argparse.Namespace) -> int:
    from mnistlab.models import get_model_info, list_models

    shape = data_shape(args)
    rows: list[tuple[str, str, Any, str]] = []
    for name in list_models(args.pattern):
        info = get_model_info(name)
        rows.append((name, _parameters(name, shape), info.description, _recipe_text(info.recipe)))
    fits = [r[1] for r in rows if not r[1].startswith("cannot")]
    w0 = max([5] + [len(r[0]) for r in rows])
    w1 = max([10] + [len(p) for p in fits])
    channels, side, classes = shape
    print(f"parameters for {channels}x{side}x{side} images and {classes} classes ({args.dataset})")
    print(f"{'model':<{w0}}  {'parameters':>{w1}}  description")
    for name, params, desc, recipe in rows:
        if params.startswith("cannot"):
            print(f"{name:<{w0}}  {'-':>{w1}}  {params}")
            print(f"{'':<{w0}}  {'':>{w1}}  {desc}")
        else:
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
