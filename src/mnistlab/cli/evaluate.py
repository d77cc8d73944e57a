"""`mnistlab evaluate RUN`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mnistlab.cli.common import add_model_code_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a run's checkpoint on the test (or valid) split",
        description="Accuracy, macro precision/recall/F1, macro one-vs-rest ROC-AUC, per-class scores and the "
        "confusion matrix of a run's best checkpoint.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder, e.g. runs/fast")
    p.add_argument("--split", default="test", choices=["test", "valid", "train"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where the dataset is, if it moved")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="do not (re)write plots and report")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the softmax over the image, 4 copies shifted by 1 px "
                        "and, for colour, its mirror")
    add_model_code_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mnistlab.evaluation import evaluate

    metrics = evaluate(args.run, args.split, checkpoint=args.checkpoint, data_dir=args.data_dir,
                       device=args.device, plots=args.plots, model_code=args.model_code,
                       allow_changed_code=args.allow_changed_code, tta=args.tta)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_metrics(metrics))
    return 0


def format_metrics(m: dict[str, Any]) -> str:
    """A human-readable report: overall scores, per-class table and confusion matrix."""
    from mnistlab.tta import SHIFTS

    views = m.get("tta_views") or len(SHIFTS)
    auc = "n/a" if m.get("auc_macro") is None else f"{m['auc_macro']:.4f}"
    lines = [
        f"{m['split']} split, {m['samples']} images, {m['checkpoint']} checkpoint (epoch {m.get('epoch')})"
        f"{f', test-time augmentation ({views} views)' if m.get('tta') else ''}",
        f"accuracy {m['accuracy']:.4f}  precision {m['precision_macro']:.4f}  recall {m['recall_macro']:.4f}  "
        f"F1 {m['f1_macro']:.4f}  AUC {auc}  loss {m['loss']:.4f}",
        "",
        f"{'class':<14} {'precision':>9} {'recall':>8} {'f1':>8} {'support':>8}",
    ]
    for row in m["per_class"]:
        lines.append(
            f"{row['class'][:14]:<14} {row['precision']:>9.4f} {row['recall']:>8.4f} {row['f1']:>8.4f} {row['support']:>8d}"
        )
    return "\n".join(lines + [""] + format_confusion(m["confusion_matrix"]))


def format_confusion(cm: list[list[int]]) -> list[str]:
    """The confusion matrix as aligned text lines, rows the true class, columns the predicted one."""
    width = max(5, max(len(str(v)) for r in cm for v in r) + 1)
    lines = ["confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * 6 + "".join(f"{j:>{width}}" for j in range(len(cm))))
    for i, r in enumerate(cm):
        lines.append(f"{i:>5} " + "".join(f"{v:>{width}}" for v in r))
    return lines
