"""Flags shared by several commands, and the translation of train flags into a TrainConfig."""

from __future__ import annotations

import argparse
from typing import Any

from mnistlab.errors import UsageError

S = argparse.SUPPRESS


def add_data_flags(p: argparse.ArgumentParser, dataset_default: Any = S) -> None:
    p.add_argument(
        "--dataset", default=dataset_default, metavar="NAME",
        help="mnist, fashion-mnist, kmnist, cifar10, cifar100, folder:PATH or csv:PATH (default: mnist)",
    )
    p.add_argument(
        "--data-dir", default=S, metavar="DIR",
        help="data root (default: $MNISTLAB_DATA, else ~/.cache/mnistlab); dataset NAME is read from DIR/NAME/",
    )


def add_shape_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--channels, --image-size (folder: data) and --labels (cifar100): what the images and classes are."""
    p.add_argument("--channels", default=S, choices=["auto", "1", "3"],
                   help="folder:PATH: 1 (gray) or 3 (colour) channels; auto (default): 3 when a training image "
                   "has colour")
    p.add_argument("--image-size", type=int, default=S, metavar="N",
                   help="folder:PATH: resize to NxN, keeping the aspect ratio (black bars); default 28 for 1 "
                   "channel, 32 for 3")
    p.add_argument("--labels", default=S, choices=["fine", "coarse"],
                   help="cifar100: the 100 fine classes (default) or the 20 coarse ones")


def _number_or_off(text: str, what: str) -> float:
    """A number; none or off give 0, which switches `what` off (also where a model's recipe has it on)."""
    if text.strip().lower() in ("none", "off"):
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, or none/off to disable {what}, got {text!r}") from None


def clip_grad_value(text: str) -> float:
    """--clip-grad NORM; 0, none or off: no clipping (also for models whose recipe clips)."""
    return _number_or_off(text, "clipping")


def ema_value(text: str) -> float:
    """--ema DECAY; 0, none or off: no average of the weights (also where a model's recipe keeps one)."""
    return _number_or_off(text, "the average")


def add_optimisation_flags(g: argparse._ArgumentGroup) -> None:
    """The optimisation flags of every kind of run (image and text runs share them, so they cannot drift)."""
    g.add_argument("--epochs", type=float, default=S, help="epochs; a fraction trains part of the last one")
    g.add_argument("--batch-size", "-b", type=int, default=S)
    g.add_argument("--lr", type=float, default=S, help="learning rate (the peak rate for onecycle)")
    g.add_argument("--optimizer", default=S, help="sgd, adam, adamw, adadelta, rmsprop")
    g.add_argument("--momentum", type=float, default=S, help="for sgd and rmsprop")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=S, help="Nesterov momentum (sgd)")
    g.add_argument("--betas", type=float, nargs=2, default=S, metavar=("B1", "B2"), help="for adam/adamw")
    g.add_argument("--weight-decay", type=float, default=S)
    g.add_argument("--scheduler", default=S, help="none, step, cosine, onecycle")
    g.add_argument("--step-size", type=int, default=S, help="step scheduler: epochs between decays")
    g.add_argument("--gamma", type=float, default=S, help="step scheduler: decay factor")
    g.add_argument("--pct-start", type=float, default=S, help="onecycle: share of steps warming up")
    g.add_argument("--label-smoothing", type=float, default=S)
    g.add_argument("--clip-grad", type=clip_grad_value, default=S, metavar="NORM",
                   help="clip the gradient norm; 0 or none: no clipping")
    g.add_argument("--ema", type=ema_value, default=S, metavar="DECAY",
                   help="validate and test an exponential moving average of the weights, e.g. 0.999; 0: off")
    g.add_argument("--accumulate", type=int, default=S, metavar="N",
                   help="step the optimizer every N batches (gradient accumulation: batch B x N acts as batch N*B)")
    g.add_argument("--class-weights", default=S, metavar="balanced|FILE.json",
                   help="weight the training loss per class: balanced (inverse class frequency) or a JSON list "
                        "or {class: weight} mapping")
    g.add_argument("--patience", type=int, default=S, help="early stopping on --monitor; 0 disables")
    g.add_argument("--monitor", default=S, metavar="valid_loss|valid_accuracy",
                   help="what picks the best epoch (best.pt, scored on test) and stops early: valid_loss (default) "
                        "or valid_accuracy (label smoothing makes the loss a poor judge)")
    g.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=S)
    g.add_argument("--seed", type=int, default=S, help="seeds every random source (default 0)")


def add_run_flags(g: argparse._ArgumentGroup, *, resume_help: str, name_help: str) -> None:
    """Where a run goes and what it prints: shared by image and text runs."""
    g.add_argument("--device", default=S, help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    g.add_argument("--threads", type=int, default=S, help="CPU threads for torch")
    g.add_argument("--eval-batch-size", type=int, default=S)
    g.add_argument("--out", default=S, metavar="DIR", help="runs root (default: runs/)")
    g.add_argument("--name", default=S, help=name_help)
    g.add_argument("--resume", default=S, metavar="RUN", help=resume_help)
    g.add_argument("--quiet", "-q", dest="progress", action="store_const", const="quiet", default=S,
                   help="print only the result")
    g.add_argument("--jsonl", dest="progress", action="store_const", const="jsonl", default=S,
                   help="one JSON object per epoch and for the result, for scripts")
    g.add_argument("--no-plots", dest="plots", action="store_false", default=S, help="skip plots and report")
    g.add_argument("--tensorboard", action="store_true", default=S, help="also log to RUN/tensorboard/")
    g.add_argument("--mlflow", nargs="?", const="default", default=S, metavar="URI",
                   help="also log to MLflow: params, metrics per epoch, files at the end (URI default: "
                        "$MLFLOW_TRACKING_URI, else ./mlruns; needs mnistlab[mlflow])")
    g.add_argument("--mlflow-checkpoints", action="store_true", default=S,
                   help="with --mlflow: upload the checkpoints too")


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Every TrainConfig field as a flag. Defaults are SUPPRESS so that only flags given override."""
    g = p.add_argument_group("model and data")
    g.add_argument("--config", "-c", default=S, metavar="FILE", help="YAML file of settings (flags win over it)")
    g.add_argument("--model", "-m", default=S, help="model name (see `mnistlab models`; default: fast)")
    add_data_flags(g)
    add_shape_flags(g)
    g.add_argument("--set", dest="set", action="append", default=S, metavar="KEY=VALUE",
                   help="model option, repeatable: --set hidden_dims=784,128,128,128 --set batchnorm=false")
    g.add_argument("--init", default=S, help="weight init: default, gaussian, xavier, kaiming, zeros")
    g.add_argument("--valid-fraction", type=float, default=S, metavar="F", help="held-out validation share (default 0.2)")
    g.add_argument("--stratify", action="store_true", default=S, help="stratified train/valid split")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=S,
                   help="on the device, per batch: random shifts of up to 2 px for 1-channel data (digits: no "
                   "flips); random crops of the image padded by 1/8 of its side, and horizontal flips, for colour")
    g.add_argument("--rotate", type=float, default=S, metavar="DEG",
                   help="with --augment: also turn each image by a random angle of up to DEG degrees (0: off)")
    g.add_argument("--zoom", type=float, default=S, metavar="F",
                   help="with --augment: also scale each image by a random factor from 1-F to 1+F (0: off)")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=S,
                   help="the final test pass averages the softmax over the image and 4 copies shifted by 1 px")

    add_optimisation_flags(p.add_argument_group("optimisation (defaults: the model's recipe, see `mnistlab models`)"))

    g = p.add_argument_group("hardware")
    g.add_argument("--amp", default=S, help="auto, bf16, off (auto: bf16 on CUDA, and for convolutional nets on CPUs with AMX)")
    g.add_argument("--compile", action="store_true", default=S, help="torch.compile the model (CUDA)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=S)
    g.add_argument("--sync-bn", action="store_true", default=S,
                   help="under torchrun: synchronise BatchNorm statistics across processes (CUDA)")

    add_run_flags(
        p.add_argument_group("hardware and output"),
        resume_help="continue RUN from its last checkpoint (with --epochs N: train a finished run longer)",
        name_help="run name (default: the model's; -2, -3... if taken)",
    )


def add_model_code_flags(p: argparse.ArgumentParser) -> None:
    """--model-code / --allow-changed-code: the code of a run whose model is a user's file, passed again."""
    g = p.add_argument_group("a run of your own model (--model FILE.py:NAME)")
    g.add_argument("--model-code", default=None, metavar="FILE.py",
                   help="the run's model file (a run never imports its code by itself; its sha256 must match)")
    g.add_argument("--allow-changed-code", action="store_true", default=False,
                   help="use --model-code although the file changed since the run (another sha256)")


def model_code(args: argparse.Namespace) -> Any:
    """The ModelCode of --model-code / --allow-changed-code."""
    from mnistlab.models.usercode import ModelCode

    return ModelCode.of(getattr(args, "model_code", None), bool(getattr(args, "allow_changed_code", False)))


# argparse dest -> TrainConfig field, where they differ
_RENAMES = {"set": "model_options"}
_NOT_CONFIG = {"command", "handler", "debug", "config", "data_command", "grid", "workers", "model_code",
               "allow_changed_code"}


def given_settings(args: argparse.Namespace) -> list[str]:
    """The TrainConfig settings the command line set (flags default to SUPPRESS: only given ones are there)."""
    if getattr(args, "resume", None) and getattr(args, "config", None):
        raise UsageError("--config cannot go with --resume: a resumed run keeps its own settings")
    return [_RENAMES.get(k, k) for k in vars(args) if k not in _NOT_CONFIG]


def config_from_args(args: argparse.Namespace) -> Any:
    """Merge the YAML `--config` file (if any) and the given flags into a TrainConfig."""
    from mnistlab.config import TrainConfig, load_config_file
    from mnistlab.models.registry import parse_set_flags

    values: dict[str, Any] = load_config_file(args.config) if getattr(args, "config", None) else {}
    _code_only_from_the_command_line(values, args)
    for key, value in vars(args).items():
        if key in _NOT_CONFIG:
            continue
        key = _RENAMES.get(key, key)
        if key == "model_options":
            values["model_options"] = {**(values.get("model_options") or {}), **parse_set_flags(value)}
        else:
            values[key] = value
    return TrainConfig.from_dict(values, "the command line")


def _code_only_from_the_command_line(values: dict[str, Any], args: argparse.Namespace) -> None:
    """A config file may not name a model file unless the command line names it too: code runs only
    when the user names it (a config.yaml copied from someone's run folder must not run their code)."""
    from mnistlab.models.usercode import is_file_model

    named = values.get("model")
    if isinstance(named, str) and is_file_model(named) and not is_file_model(str(getattr(args, "model", ""))):
        raise UsageError(
            f"{args.config} names the model file {named}: code runs only when named on the command line, "
            f"so add --model {named}"
        )
