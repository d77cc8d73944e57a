"""Evaluation: a run's checkpoint scored on one split of its data.

`mnistlab evaluate RUN` and the end of `mnistlab train` share `mnistlab.scoring`'s
`predict_logits` and `score`, so the test numbers in summary.json and from `evaluate` are
computed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnistlab.data.recreate import run_dataset, split_images
from mnistlab.display import Metrics
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.models.usercode import ModelCode
from mnistlab.runs import Run, load_run
from mnistlab.scoring import predict_logits, score
from mnistlab.tta import view_count

__all__ = ["evaluate", "predict_logits", "run_dataset", "score", "split_images"]


def evaluate(
    run: str | Path | Run, split: str = "test", *, checkpoint: str = "best", data_dir: str | None = None,
    device: str = "auto", plots: bool = False, model_code: str | Path | None = None,
    allow_changed_code: bool = False, model: Any = None, tta: bool = False,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on one split of its dataset.

    Args:
        run: a run folder (or the Run that `mnistlab.train` returned).
        split: "test" (default), "valid" or "train" — the split is recreated from the run's seed.
        checkpoint: "best" or "last".
        data_dir: where the dataset lives, if not where the run found it.
        plots: also (re)write the run's plots and report.md for this evaluation.
        model_code: for a run of a user's model file, that file (its sha256 must match the one the
            run recorded, unless allow_changed_code); a run never imports its code by itself.
        model: for a run trained with mnistlab.fit on a module object, a fresh instance of it.
        tta: test-time augmentation: the softmax averaged over the images and copies shifted by 1 px
            (mnistlab.tta). A run trained with --ema is scored with its average of the weights.

    Returns:
        The metrics dict (accuracy, precision_macro, recall_macro, f1_macro, auc_macro,
        confusion_matrix, per_class, samples, loss) plus `split`, `checkpoint`, `epoch` and `tta`; a
        dict that a notebook shows as tables and the confusion matrix picture (mnistlab.display.Metrics).

    Example:
        >>> metrics = evaluate("runs/fast")            # doctest: +SKIP
        >>> round(metrics["accuracy"], 4)              # doctest: +SKIP
    """
    if load_run(run).config.get("task") == "text":
        # Text runs (mnistlab text train) re-split their CSV; same metrics dict shape.
        from mnistlab.text.engine import evaluate_text

        if tta:
            raise UsageError("--tta averages over shifted copies of images: a text run has none to shift")
        return Metrics({**evaluate_text(run, split, checkpoint=checkpoint, device=device, plots=plots), "tta": False},
                       "texts")
    from mnistlab.training.hardware import select_device

    if split not in ("test", "valid", "train"):
        raise UsageError(f"bad split {split!r}: choose test, valid or train")
    run = load_run(run)
    config = run.config
    model, ckpt = _load_model(run, checkpoint, ModelCode.of(model_code, allow_changed_code), model)
    data = run_dataset(config, list(ckpt["data"]["classes"]), data_dir, shape=ckpt["data"])
    images, labels = split_images(data, config, split)
    dev = select_device(device)
    model.to(dev)
    channels_last = bool(config.get("channels_last"))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    logits = predict_logits(
        model, images, tuple(ckpt["data"]["mean"]), tuple(ckpt["data"]["std"]), device=dev,
        batch_size=int(config.get("eval_batch_size") or 2000), channels_last=channels_last, tta=tta,
    )
    metrics = score(logits, labels, list(data.classes))
    metrics.update(split=split, checkpoint=checkpoint, epoch=ckpt.get("epoch"), tta=bool(tta))
    metrics.update({"tta_views": view_count(int(ckpt["data"].get("in_channels") or 1))} if tta else {})
    if plots:
        _write_report(run, logits, split, checkpoint, ckpt.get("epoch"), data)
    return Metrics(metrics)


def _load_model(run: Run, checkpoint: str, code: ModelCode, model: Any = None) -> tuple[Any, dict[str, Any]]:
    """The run's model rebuilt from its `checkpoint` ("best" or "last"), and the checkpoint."""
    from mnistlab.training.checkpoint import build_model_from_checkpoint, load_checkpoint

    if checkpoint not in ("best", "last"):
        raise UsageError(f"bad checkpoint {checkpoint!r}: choose best or last")
    ckpt_path = run.checkpoint_path(checkpoint)
    if not ckpt_path.is_file():
        raise MnistlabError(f"run {run.path} has no {checkpoint} checkpoint ({ckpt_path})")
    ckpt = load_checkpoint(ckpt_path)
    return build_model_from_checkpoint(ckpt, str(ckpt_path), code=code, model=model), ckpt


def _write_report(run: Run, logits: torch.Tensor, split: str, checkpoint: str, epoch: int | None, data: Any) -> None:
    """Plots and report for this evaluation; a failure is a warning, never an error."""
    import sys

    try:
        from mnistlab import report
    except ImportError:
        return
    if split != "test":
        return  # the report describes the test split
    try:
        report.write_run_report(run, test_logits=logits, checkpoint=checkpoint, checkpoint_epoch=epoch, data=data)
    except Exception as exc:  # noqa: BLE001 - plotting must never fail an evaluation
        print(f"warning: could not write plots/report for {run.path}: {exc}", file=sys.stderr)

