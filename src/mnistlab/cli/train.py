"""`mnistlab train`."""

from __future__ import annotations

import argparse

from mnistlab.cli.common import add_model_code_flags, add_train_flags, config_from_args, given_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and write a run folder",
        description=(
            "Train a model. With no flags: the `fast` CNN on MNIST with its recipe (~99% test accuracy). "
            "Settings come from the model's recipe, then --config FILE, then the flags."
        ),
        epilog=(
            "examples:\n"
            "  mnistlab train\n"
            "  mnistlab train --model dnn --set hidden_dims=784,128,128,128 --init kaiming --patience 3\n"
            "  mnistlab train --model lstm --epochs 5 --name lstm-5ep\n"
            "  mnistlab train --resume runs/lstm-5ep\n"
            "  mnistlab train --model my_net.py:DNN --set hidden=256   # your own nn.Module\n"
            "  torchrun --nproc_per_node=2 -m mnistlab train --model cnn-bn\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_flags(p)
    add_model_code_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.training.engine import train

    train(config_from_args(args), model_code=args.model_code, allow_changed_code=args.allow_changed_code,
          given=given_settings(args))
    return 0
