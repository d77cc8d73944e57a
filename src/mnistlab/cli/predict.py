"""`mnistlab predict`: image files, CSV pixel rows, .npy/.npz arrays, IDX files or a run's dataset split.

The work is in `mnistlab.predict_inputs` (reading each kind of input) and `mnistlab.predict_files`
(streaming them through the model and writing the predictions); this module parses flags and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from mnistlab.cli.common import add_model_code_flags, model_code

EPILOG = """examples:
  mnistlab predict runs/fast img/3.png digits/ --top-k 3
  mnistlab predict runs/fast test.csv --out submission.csv       # Kaggle's ImageId,Label
  mnistlab predict runs/fast images.npy --out predictions.csv --format full
  mnistlab predict runs/fast t10k-images-idx3-ubyte.gz --metrics metrics.json
  mnistlab predict runs/fast --dataset mnist --split test --out test-predictions.csv
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the predict sub-command."""
    p = sub.add_parser(
        "predict",
        help="predict digits (or a colour run's classes) in image files, CSV pixel rows, .npy/.npz arrays, IDX files "
        "or a dataset split",
        description="Predict digits. Image files (PNG, JPEG, BMP, GIF) of any size, colour and polarity are "
        "preprocessed the way MNIST was made (grayscale, white on black, cropped, scaled to 20 px, centred by "
        "mass in 28x28); a colour run's images are instead resized (aspect ratio kept) and normalised as its "
        "training images were. Array-like inputs are MNIST-shaped already and get only the training normalisation: "
        "a CSV of pixel rows (pixel0..pixel783, optionally a label column; Kaggle's test.csv), a .npy/.npz "
        "array [N, H, W] or [N, C, H, W] (uint8 0-255 or float 0-1), an IDX images file (labels beside it are "
        "used). Without --out, prints `name  digit  confidence` per image; exit code 1 if any file could not "
        "be read. With labels (a CSV label column, IDX labels, --dataset) also reports accuracy and macro F1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.intermixed = True  # INPUT... may be empty (--dataset) and still come after options: cli._Parser
    p.add_argument("run", metavar="RUN", help="a run folder (its best checkpoint) or a checkpoint .pt file")
    p.add_argument("images", metavar="INPUT", nargs="*",
                   help="image files and folders, .csv, .npy, .npz (FILE.npz:KEY picks an array) or IDX files")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="the K most likely digits: digit:probability pairs, or K label/probability column pairs "
                   "with --format full (default 3 there and with --json)")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line (not with --out)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the softmax over the image, 4 copies shifted by 1 px "
                        "and, for colour, its mirror")
    add_model_code_flags(p)
    g = p.add_argument_group("many images")
    g.add_argument("--out", default=None, metavar="FILE.csv", help="write the predictions to this CSV (atomically)")
    g.add_argument("--format", default=None, choices=["auto", "kaggle", "full"],
                   help="with --out: kaggle (ImageId,Label), full (source,index,prediction,confidence + top-k) "
                   "or auto (default: kaggle when every input is a CSV without labels, else full)")
    g.add_argument("--batch-size", type=int, default=1000, metavar="N", help="images per batch (default 1000)")
    g.add_argument("--preprocess", default="auto", choices=["auto", "photo", "none"],
                   help="auto (default): MNIST-style preprocessing for image files only; photo: for every input; "
                   "none: only grayscale and resizing for image files")
    g.add_argument("--dataset", default=None, metavar="NAME",
                   help="predict a split of dataset NAME (e.g. the run's: mnist, csv:train.csv), recreated as "
                   "`mnistlab evaluate` does")
    g.add_argument("--split", default=None, choices=["test", "valid", "train"], help="with --dataset (default test)")
    g.add_argument("--data-dir", default=None, metavar="DIR", help="with --dataset: where the data is, if it moved")
    g.add_argument("--metrics", default=None, metavar="FILE.json",
                   help="write accuracy, macro F1, the confusion matrix... (the keys of `mnistlab evaluate --json`)")
    p.set_defaults(handler=run_predict)


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse contradictory flags before any file is opened."""
    from mnistlab.errors import UsageError

    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.images and not args.dataset:
        raise UsageError("nothing to predict: give image files, folders, .csv, .npy/.npz or IDX files, "
                         "or --dataset NAME")
    if args.split and not args.dataset:
        raise UsageError("--split needs --dataset NAME (the split of which dataset?)")
    if args.data_dir and not args.dataset:
        raise UsageError("--data-dir needs --dataset NAME")
    if args.out is None and args.format is not None:
        raise UsageError("--format needs --out FILE.csv (without --out the predictions are printed)")
    if args.out is not None and args.json:
        raise UsageError("--json prints the predictions; with --out they go to the file "
                         "(--format full has every field)")
    for flag, path in (("--out", args.out), ("--metrics", args.metrics)):
        if path is not None and (not path or Path(path).is_dir()):
            raise UsageError(f"{flag} needs a file name, got {path!r}")
        if path is not None and any(_same_file(path, item) for item in args.images):
            raise UsageError(f"{flag} {path} is one of the inputs; choose another name")
    if args.out and args.metrics and _same_file(args.out, args.metrics):
        raise UsageError("--out and --metrics name the same file")


def _metrics_record(args: argparse.Namespace, predictor: Any, sources: list[Any], metrics: dict[str, Any]) -> dict:
    """The metrics with evaluate's extra keys: split (--dataset's, if the only labelled input), checkpoint, epoch."""
    labelled = [s for s in sources if s.has_labels]
    split = (args.split or "test") if args.dataset and labelled == [sources[-1]] else None
    checkpoint = args.checkpoint if Path(args.run).is_dir() else predictor.source
    return {**metrics, "split": split, "checkpoint": checkpoint, "epoch": predictor.epoch}


def summary_lines(outcome: Any, classes: list[str]) -> list[str]:
    """Throughput, then (with labels) accuracy, macro F1, the most frequent confusions and the matrix."""
    from mnistlab.cli.evaluate import format_confusion

    speed = f"{outcome.images_per_second:,.0f} images/s (read, predict, write)"
    lines = [f"{outcome.images:,} image{'s' if outcome.images != 1 else ''} in {outcome.seconds:.2f} s: {speed}"]
    m = outcome.metrics
    if not m:
        return lines
    cm = m["confusion_matrix"]
    tta = " (test-time augmentation)" if m.get("tta") else ""
    lines.append(f"accuracy {m['accuracy']:.4f}  macro F1 {m['f1_macro']:.4f}  on {m['samples']:,} labelled images{tta}")
    pairs = sorted(((cm[i][j], i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i][j]),
                   reverse=True)[:3]
    if pairs:
        lines.append("most confused: " + ", ".join(f"{classes[i]} as {classes[j]} ({n:,})" for n, i, j in pairs))
    return lines + format_confusion(cm)


def _predict(args: argparse.Namespace, predictor: Any, sources: list[Any], report: IO[str]) -> Any:
    """Predict into --out, or print the lines to stdout as `mnistlab predict` always did."""
    from mnistlab.errors import Terminated, UsageError
    from mnistlab.predict_files import LineWriter, choose_format, predict_sources, predict_to_csv

    if args.out is None:
        k = min(args.top_k or (3 if args.json else 1), len(predictor.classes))
        sink = LineWriter(predictor, sys.stdout, as_json=args.json, top_k=k, pairs=args.top_k is not None)
        return predict_sources(predictor, sources, sink, batch_size=args.batch_size, preprocess=args.preprocess)
    fmt = choose_format(args.format or "auto", sources)
    if fmt == "kaggle" and args.top_k is not None:
        raise UsageError("--top-k has no place in the kaggle format (ImageId,Label); use --format full")
    try:
        outcome = predict_to_csv(predictor, sources, args.out, fmt, top_k=args.top_k or 3,
                                 batch_size=args.batch_size, preprocess=args.preprocess)
    except KeyboardInterrupt as exc:  # Ctrl-C (exit 130) or SIGTERM (Terminated, 143): say what is left
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        raise type(exc)(f"{how}; {args.out} was not written") from None
    header = "ImageId,Label" if fmt == "kaggle" else "source,index,prediction,confidence,top-k"
    print(f"wrote {args.out} ({fmt}: {header}; {outcome.images:,} rows)", file=report)
    return outcome


def run_predict(args: argparse.Namespace) -> int:
    """Predict every input; per-file errors go to stderr and make the exit code 1."""
    from mnistlab.errors import UsageError
    from mnistlab.predict import Predictor
    from mnistlab.predict_inputs import open_inputs

    _check_flags(args)
    predictor = Predictor.from_run(args.run, args.checkpoint, model_code(args))
    predictor.batch_size = args.batch_size
    if args.preprocess == "photo" and predictor.in_channels == 3:
        raise UsageError("--preprocess photo is the MNIST digit preprocessing, for gray runs; this run takes "
                         "colour images, which are resized and normalised as in training (--preprocess auto)")
    predictor.tta = bool(args.tta)
    sources = open_inputs(args.images, predictor, photo_arrays=args.preprocess == "photo", dataset=args.dataset,
                          split=args.split or "test", data_dir=args.data_dir)
    if args.metrics and not any(s.has_labels for s in sources):
        raise UsageError("--metrics needs labels, and no input has them (a CSV label column, IDX labels beside "
                         "the images, an .npz labels array, or --dataset)")
    # The summary goes where the predictions are not: stdout when they go to --out, else stderr.
    report = sys.stdout if args.out else sys.stderr
    for source in sources:
        if source.note:
            print(f"note: {source.note}", file=sys.stderr)
    try:
        outcome = _predict(args, predictor, sources, report)
    finally:
        sys.stdout.flush()
        for message in (m for source in sources for m in source.errors):
            print(f"mnistlab: error: {message}", file=sys.stderr)
    if not outcome.images and not outcome.errors:
        print("mnistlab: error: no image files found (PNG, JPEG, BMP, GIF)", file=sys.stderr)
        return 1
    if outcome.metrics and args.metrics:
        from mnistlab.runs import write_json

        write_json(Path(args.metrics), _metrics_record(args, predictor, sources, outcome.metrics))
    # Image files alone print only their lines, as they always did.
    if outcome.images and (args.out or any(source.kind != "images" for source in sources)):
        print("\n".join(summary_lines(outcome, predictor.classes)), file=report)
    return 1 if outcome.errors else 0
