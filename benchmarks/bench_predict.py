"""6. Predict a CSV: 28,000 rows in Kaggle's test.csv layout, end to end (parse + predict + write submission.csv).

mnistlab's side is what `mnistlab predict RUN test.csv --out submission.csv` runs after loading
the model (`open_inputs` + `predict_to_csv`: the chunked uint8 parser, the Predictor in batches
of 1000, the kaggle writer, the atomic rename). The reference is what a notebook would write:
pandas' `read_csv`, the same checkpoint's model in plain PyTorch (float tensors,
`(x / 255 - mean) / std`, batches of 1000 under inference_mode) and `DataFrame.to_csv`. Both
sides are timed in this process, interleaved repetition by repetition, and both submissions
are compared label by label. Then the parsing alone (mnistlab's parser vs `read_csv`), and the
whole command as a user types it (process start, imports and model loading included).

The rows are MNIST's 10,000 test and first 18,000 training images (made-up images with --quick,
2,000 rows). pandas is needed for this benchmark only (`pip install pandas` into the venv); it is
not a dependency of mnistlab.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from common import Context, Row, load_mnist, median, mnistlab_command, ratio, run_command, short_run

ROWS, QUICK_ROWS = 28_000, 2_000
BATCH = 1000


def write_test_csv(ctx: Context, path: Path, rows: int) -> Path:
    """Kaggle's test.csv layout: a `pixel0..pixel783` header, one image per row, no label."""
    data = load_mnist(ctx)
    images = np.concatenate([data.test_images.numpy(), data.train_images.numpy()])
    images = np.resize(images, (rows, *images.shape[1:])).reshape(rows, -1)  # repeats if there are fewer
    with open(path, "w") as f:
        f.write(",".join(f"pixel{i}" for i in range(images.shape[1])) + "\n")
        np.savetxt(f, images, fmt="%d", delimiter=",")
    return path


def reference(csv_path: Path, out: Path, model: Any, mean: float, std: float) -> None:
    """pandas read_csv + the model in plain PyTorch + DataFrame.to_csv."""
    import pandas as pd
    import torch

    frame = pd.read_csv(csv_path)
    x = torch.from_numpy(frame.to_numpy(dtype=np.float32)).view(-1, 1, 28, 28)
    x = (x / 255 - mean) / std
    with torch.inference_mode():
        labels = torch.cat([model(x[i : i + BATCH]).argmax(dim=1) for i in range(0, len(x), BATCH)]).numpy()
    pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels}).to_csv(out, index=False)


def mnistlab_side(predictor: Any, csv_path: Path, out: Path) -> None:
    """What `mnistlab predict RUN test.csv --out submission.csv` does once the model is loaded."""
    from mnistlab.predict_files import predict_to_csv
    from mnistlab.predict_inputs import open_inputs

    predict_to_csv(predictor, open_inputs([str(csv_path)], predictor), out, "auto", batch_size=BATCH)


def parse_only(csv_path: Path) -> None:
    """mnistlab's chunked parser over the whole file (nothing kept)."""
    from mnistlab.data.pixel_csv import iter_rows, open_pixel_csv

    for _ in iter_rows(open_pixel_csv(csv_path, pixels=784), BATCH):
        pass


def warm_up(predictor: Any, plain: Any) -> None:
    """One untimed batch through each model: the first call of a process picks and builds its kernels."""
    import torch

    predictor.predict_logits(np.zeros((BATCH, 1, 28, 28), np.uint8))
    with torch.inference_mode():
        plain(torch.zeros(BATCH, 1, 28, 28))


def _seconds(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _differing(a: Path, b: Path) -> int:
    """Rows whose label differs between two submission files (also when a file is shorter)."""
    la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    return sum(x != y for x, y in zip(la, lb)) + abs(len(la) - len(lb))


def run(ctx: Context) -> list[Row]:
    from mnistlab.predict import Predictor
    from mnistlab.training.checkpoint import build_model_from_checkpoint, load_checkpoint

    try:
        import pandas as pd
    except ImportError:
        raise SystemExit("benchmark predict needs pandas for its reference side: pip install pandas "
                         "(into the venv; mnistlab itself does not need it)") from None
    rows_n = QUICK_ROWS if ctx.quick else ROWS
    run_dir = short_run(ctx, "predict-run")
    csv_path = write_test_csv(ctx, ctx.work / "test.csv", rows_n)
    predictor = Predictor.from_run(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    plain = build_model_from_checkpoint(ckpt)  # NCHW, as a notebook would load it
    mean, std = float(ckpt["data"]["mean"][0]), float(ckpt["data"]["std"][0])
    ours_out, ref_out = ctx.work / "submission-mnistlab.csv", ctx.work / "submission-pandas.csv"
    warm_up(predictor, plain)

    ours, ref, parse, read_csv = [], [], [], []
    for rep in range(max(ctx.reps, 1)):  # interleaved: A, B, A, B, ...
        ours.append(_seconds(lambda: mnistlab_side(predictor, csv_path, ours_out)))
        ref.append(_seconds(lambda: reference(csv_path, ref_out, plain, mean, std)))
        parse.append(_seconds(lambda: parse_only(csv_path)))
        read_csv.append(_seconds(lambda: pd.read_csv(csv_path).to_numpy(dtype=np.uint8)))
        ctx.log(f"predict rep {rep}: mnistlab {ours[-1]:.2f} s, pandas + torch {ref[-1]:.2f} s")
    walls = [run_command([*mnistlab_command(), "predict", str(run_dir), str(csv_path), "--out",
                          str(ctx.work / "submission-cli.csv")])[0] for _ in range(max(ctx.reps, 1))]
    differ = _differing(ours_out, ref_out)
    what = f"{rows_n:,} CSV rows end to end (parse + predict + write)"
    return [
        Row("6 predict csv", f"{what}: mnistlab", "cpu", rows_n / median(ours), "img/s", len(ours),
            ratio=f"{ratio(median(ref), median(ours))} the img/s of pandas + PyTorch; labels differ on {differ} rows"),
        Row("6 predict csv", f"{what}: pandas read_csv + plain PyTorch + to_csv", "cpu", rows_n / median(ref),
            "img/s", len(ref)),
        Row("6 predict csv", "  parsing alone: mnistlab's chunked uint8 parser", "cpu", median(parse), "s", len(parse),
            ratio=f"pandas read_csv {median(read_csv):.2f} s: {ratio(median(read_csv), median(parse))} as long"),
        Row("6 predict csv", f"`mnistlab predict RUN test.csv --out submission.csv` wall ({rows_n:,} rows)", "cpu",
            median(walls), "s", len(walls)),
    ]
