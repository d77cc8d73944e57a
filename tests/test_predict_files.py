"""`mnistlab predict` at dataset scale: CSV pixel rows, .npy/.npz, IDX, --dataset, predictions files
(Kaggle's format included), metrics, bad input, bounded memory, and the whole Kaggle flow."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main
from mnistlab.data.idx import write_idx
from mnistlab.data.synthetic import make_fake_mnist

PIXELS = [f"pixel{i}" for i in range(784)]
EVALUATE_KEYS = {"accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "confusion_matrix",
                 "per_class", "samples", "loss", "split", "checkpoint", "epoch", "tta"}


def kaggle_csv(path: Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Kaggle's layout: `label,pixel0..pixel783` (train.csv) or `pixel0..pixel783` (test.csv)."""
    flat = images.reshape(len(images), -1).astype(np.int64)
    names = PIXELS
    if labels is not None:
        flat, names = np.concatenate([labels.reshape(-1, 1).astype(np.int64), flat], axis=1), ["label", *PIXELS]
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        np.savetxt(f, flat, fmt="%d", delimiter=",")
    return path


def test_images() -> tuple[np.ndarray, np.ndarray]:
    """The test split of `fake_mnist_root` (the quick run's test images), uint8 [200, 28, 28]."""
    return make_fake_mnist(200, seed=1)


test_images.__test__ = False  # a helper, not a test


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- the Kaggle flow


def test_kaggle_flow_train_csv_then_submission(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """train.csv (label,pixel0...) -> `mnistlab train --dataset csv:train.csv` -> predict test.csv -> submission.csv."""
    train_x, train_y = make_fake_mnist(600, seed=0)
    test_x, test_y = make_fake_mnist(200, seed=1)
    train_csv = kaggle_csv(tmp_path / "train.csv", train_x, train_y)
    test_csv = kaggle_csv(tmp_path / "test.csv", test_x)
    code, out, err = run_cli(capsys, "train", "--dataset", f"csv:{train_csv}", "--model", "logistic", "--epochs", "2",
                             "--out", tmp_path / "runs", "--name", "digits", "--no-plots", "--quiet")
    assert code == 0, err
    run = tmp_path / "runs" / "digits"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == f"csv:{train_csv}" and summary["status"] == "completed"

    submission = tmp_path / "submission.csv"
    code, out, err = run_cli(capsys, "predict", run, test_csv, "--out", submission)
    assert code == 0, err
    assert f"wrote {submission} (kaggle: ImageId,Label; 200 rows)" in out and "images/s" in out
    lines = submission.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 201
    ids, labels = zip(*(line.split(",") for line in lines[1:]))
    assert [int(i) for i in ids] == list(range(1, 201))
    accuracy = float(np.mean(np.array([int(label) for label in labels]) == test_y))
    assert accuracy > 0.8  # the made data is easy; chance is 0.1


def test_train_csv_is_read_as_kaggle_writes_it(tmp_path: Path) -> None:
    from mnistlab.data import load_dataset

    images, labels = make_fake_mnist(50, seed=4)
    data = load_dataset(f"csv:{kaggle_csv(tmp_path / 'train.csv', images, labels)}", seed=0)
    assert data.classes == [str(i) for i in range(10)] and data.image_size == 28
    assert len(data.train_labels) + len(data.test_labels) == 50
    got = {tuple(x.reshape(-1).tolist()): int(y) for x, y in zip(data.train_images, data.train_labels)}
    want = {tuple(x.reshape(-1).tolist()): int(y) for x, y in zip(images, labels)}
    assert got.items() <= want.items()


# --------------------------------------------------------------------------- formats and labels


def test_labelled_csv_reports_and_writes_evaluates_metrics(quick_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = test_images()
    source = kaggle_csv(tmp_path / "labelled.csv", images, labels)
    out, metrics = tmp_path / "p.csv", tmp_path / "m.json"
    code, stdout, err = run_cli(capsys, "predict", quick_run, source, "--out", out, "--metrics", metrics)
    assert code == 0, err
    rows = read_rows(out)
    assert rows[0] == ["source", "index", "prediction", "confidence", "top1_label", "top1_probability",
                       "top2_label", "top2_probability", "top3_label", "top3_probability"]  # auto: labelled -> full
    assert [r[1] for r in rows[1:]] == [str(i) for i in range(200)] and {r[0] for r in rows[1:]} == {str(source)}
    predicted = np.array([int(r[2]) for r in rows[1:]])
    m = json.loads(metrics.read_text())
    assert set(m) == EVALUATE_KEYS and m["samples"] == 200 and m["split"] is None and m["checkpoint"] == "best"
    assert m["accuracy"] == pytest.approx(float(np.mean(predicted == labels)))
    assert f"accuracy {m['accuracy']:.4f}  macro F1 {m['f1_macro']:.4f}  on 200 labelled images" in stdout
    assert "confusion matrix (rows: true, columns: predicted)" in stdout


def test_dataset_split_matches_evaluate(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mnistlab

    for split in ("test", "valid"):
        metrics = tmp_path / f"{split}.json"
        code, _, err = run_cli(capsys, "predict", quick_run, "--dataset", "mnist", "--split", split,
                               "--metrics", metrics)
        assert code == 0, err
        got, want = json.loads(metrics.read_text()), mnistlab.evaluate(quick_run, split)
        assert got["split"] == split and got["epoch"] == want["epoch"]
        for key in ("accuracy", "f1_macro", "confusion_matrix", "samples", "per_class"):
            assert got[key] == want[key], key
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    out = tmp_path / "train.csv"
    assert main(["predict", str(quick_run), "--dataset", "mnist", "--split", "train", "--out", str(out)]) == 0
    assert len(read_rows(out)) == 1 + 480 and read_rows(out)[1][0] == "mnist:train"  # 600 less the 20% valid


def test_npy_uint8_and_float_agree_and_say_what_was_assumed(quick_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    images, _ = test_images()
    variants = {"u8.npy": images, "f01.npy": images.astype(np.float32) / 255,
                "f255.npy": images.astype(np.float64), "nchw.npy": images[:, None], "flat.npy": images.reshape(200, -1)}
    predictions, notes = {}, {}
    for name, array in variants.items():
        np.save(tmp_path / name, array)
        out = tmp_path / f"{name}.csv"
        code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / name, "--out", out)
        assert code == 0, err
        notes[name] = err
        predictions[name] = [r[2] for r in read_rows(out)[1:]]
    assert "uint8 values taken as 0-255" in notes["u8.npy"]
    assert "float32 values taken as 0-1" in notes["f01.npy"]
    assert "float64 values above 1 (largest 255), taken as 0-255" in notes["f255.npy"]
    assert all(p == predictions["u8.npy"] for p in predictions.values())


def test_npz_arrays_and_labels(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = test_images()
    np.savez(tmp_path / "one.npz", images=images, labels=labels)
    np.savez(tmp_path / "keras.npz", x_train=images[:50], y_train=labels[:50], x_test=images, y_test=labels)
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / "one.npz", "--metrics", tmp_path / "m.json")
    assert code == 0, err and json.loads((tmp_path / "m.json").read_text())["samples"] == 200
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / "keras.npz")
    assert code == 1 and "x_train [50, 28, 28]" in err and "keras.npz:KEY" in err
    code, out, err = run_cli(capsys, "predict", quick_run, f"{tmp_path / 'keras.npz'}:x_train", "--metrics",
                             tmp_path / "m.json")
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["samples"] == 50  # y_train paired by name
    assert out.splitlines()[0].startswith(f"{tmp_path / 'keras.npz'}:x_train:0  ")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_with_labels_beside_them(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            gz: bool) -> None:
    images, labels = test_images()
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", images)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels)
    write_idx(tmp_path / f"alone-idx3-ubyte{ext}", images)
    metrics = tmp_path / "m.json"
    images_file = tmp_path / f"t10k-images-idx3-ubyte{ext}"
    code, _, err = run_cli(capsys, "predict", quick_run, images_file, "--metrics", metrics)
    assert code == 0, err
    import mnistlab

    assert json.loads(metrics.read_text())["accuracy"] == mnistlab.evaluate(quick_run)["accuracy"]
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / f"alone-idx3-ubyte{ext}", "--metrics", metrics)
    assert code == 2 and "--metrics needs labels" in err
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels[:10])
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / f"t10k-images-idx3-ubyte{ext}")
    assert code == 1 and "has 200 images but" in err and "10 labels" in err


def test_stdout_lines_name_each_row(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, _ = test_images()
    source = kaggle_csv(tmp_path / "test.csv", images[:5])
    code, out, err = run_cli(capsys, "predict", quick_run, source, "--top-k", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5 and lines[3].startswith(f"{source}:3  ") and len(lines[3].split("  ")) == 3
    assert "5 images in" in err  # the summary goes to stderr, stdout keeps one line per image
    code, out, _ = run_cli(capsys, "predict", quick_run, source, "--json")
    assert [json.loads(line)["path"] for line in out.splitlines()] == [f"{source}:{i}" for i in range(5)]


def test_mixed_inputs_number_kaggle_ids_across_all(quick_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    images, _ = test_images()
    Image.fromarray(images[0]).save(tmp_path / "first.png")
    np.save(tmp_path / "more.npy", images[1:4])
    out = tmp_path / "k.csv"
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / "first.png", tmp_path / "more.npy",
                           "--out", out, "--format", "kaggle")
    assert code == 0, err
    assert [r[0] for r in read_rows(out)] == ["ImageId", "1", "2", "3", "4"]
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / "first.png", tmp_path / "more.npy",
                           "--out", out, "--top-k", "1")
    rows = read_rows(out)
    assert rows[0] == ["source", "index", "prediction", "confidence", "top1_label", "top1_probability"]
    assert [r[:2] for r in rows[1:]] == [[str(tmp_path / "first.png"), "0"]] + \
        [[str(tmp_path / "more.npy"), str(i)] for i in range(3)]


def test_preprocess_flag_forces_either_way(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, _ = test_images()
    images = images[:20]
    folder = tmp_path / "png"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    np.save(tmp_path / "a.npy", images)

    def predictions(*args: object) -> list[list[str]]:
        out = tmp_path / "p.csv"
        code, _, err = run_cli(capsys, "predict", quick_run, *args, "--out", out, "--format", "full")
        assert code == 0, err
        return [r[2:] for r in read_rows(out)[1:]]

    raw = predictions(tmp_path / "a.npy")
    photo = predictions(folder)
    assert predictions(folder, "--preprocess", "none") == raw  # the PNGs' own pixels, only normalised
    assert predictions(tmp_path / "a.npy", "--preprocess", "photo") == photo  # arrays through the photo steps
    assert raw != photo  # noisy made-up digits are not MNIST-like: preprocessing changes them


# --------------------------------------------------------------------------- bad input, atomic output


@pytest.mark.parametrize(("edit", "match"), [
    (lambda r: r.rsplit(",", 1)[0], "line 32 has 783 fields, expected 784"),
    (lambda r: "x," + r.split(",", 1)[1], "line 32, field 1 is 'x', not an integer"),
    (lambda r: r.rsplit(",", 1)[0] + ",999", "line 32 has a pixel outside 0..255"),
], ids=["ragged", "not-a-number", "out-of-range"])
def test_bad_row_after_some_batches_leaves_no_file(quick_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], edit, match: str) -> None:
    images, _ = test_images()
    source = kaggle_csv(tmp_path / "test.csv", images[:40])
    lines = source.read_text().splitlines()
    lines[31] = edit(lines[31])
    source.write_text("\n".join(lines) + "\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "submission.csv"
    out.write_text("the previous file\n")
    code, _, err = run_cli(capsys, "predict", quick_run, source, "--out", out, "--batch-size", "8")
    assert code == 1 and len(err.strip().splitlines()) == 1 and match in err and str(source) in err
    assert out.read_text() == "the previous file\n" and leftovers(out_dir) == []  # no partial file, no temp file
    out.unlink()
    code, _, err = run_cli(capsys, "predict", quick_run, source, "--out", out, "--batch-size", "8")
    assert code == 1 and not out.exists() and leftovers(out_dir) == []


@pytest.mark.parametrize(("content", "match"), [
    ("", "is empty"),
    (",".join(PIXELS[:700]) + "\n" + ",".join(["0"] * 700) + "\n", "the header has 700 columns; expected 784"),
    ("label," + ",".join(PIXELS) + "\n12," + ",".join(["0"] * 784) + "\n",
     "line 2 has label 12, but the model knows 10"),
], ids=["empty", "columns", "label-out-of-range"])
def test_unusable_csv_files(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            content: str, match: str) -> None:
    (tmp_path / "bad.csv").write_text(content)
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / "bad.csv", "--out", tmp_path / "o.csv")
    assert code == 1 and match in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(("array", "match"), [
    (np.zeros((3, 32, 32), np.uint8), "32x32 images; the model takes 28x28"),
    (np.zeros((3, 3, 28, 28), np.uint8), "has 3 channels"),
    (np.zeros((3, 28), np.uint8), "shape [3, 28]"),
    (np.array([np.zeros((28, 28)), np.full((28, 28), 300.0)]), "image 1 has a value outside 0..255"),
    (np.array([np.zeros((28, 28)), np.full((28, 28), np.nan)]), "image 1 holds NaN"),
    (np.full((2, 28, 28), -1, np.int16), "image 0 has a value outside 0..255"),
    (np.array([["a"] * 28] * 28)[None], "expected numbers"),
    (np.zeros((0, 28, 28), np.uint8), "holds no images"),
], ids=["size", "channels", "shape", "range", "nan", "negative", "strings", "empty"])
def test_unusable_arrays(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], array, match) -> None:
    np.save(tmp_path / "bad.npy", array)
    code, _, err = run_cli(capsys, "predict", quick_run, tmp_path / "bad.npy")
    assert code == 1 and match in err and len(err.strip().splitlines()) == 1


def test_interrupted_prediction_leaves_no_file(quick_run: Path, tmp_path: Path) -> None:
    from mnistlab.predict import Predictor
    from mnistlab.predict_files import predict_to_csv
    from mnistlab.predict_inputs import open_inputs

    images, _ = test_images()
    predictor = Predictor.from_run(quick_run)
    sources = open_inputs([str(kaggle_csv(tmp_path / "test.csv", images))], predictor)
    batches = sources[0].batches

    def interrupted(size: int, photo: bool = False):
        for i, batch in enumerate(batches(size, photo)):
            if i == 3:
                raise KeyboardInterrupt  # Ctrl-C while the fourth batch is read
            yield batch

    sources[0].batches = interrupted
    out = tmp_path / "out" / "submission.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_to_csv(predictor, sources, out, "kaggle", batch_size=10)
    assert not out.exists() and leftovers(out.parent) == []


@pytest.mark.parametrize(("args", "match"), [
    (["{csv}", "--format", "kaggle"], "--format needs --out"),
    (["{csv}", "--out", "{tmp}/o.csv", "--json"], "--json prints the predictions"),
    (["--split", "test", "{csv}"], "--split needs --dataset"),
    ([], "nothing to predict"),
    (["{csv}", "--out", "{csv}"], "is one of the inputs"),
    (["{csv}", "--out", "{tmp}"], "--out needs a file name"),
    (["{csv}", "--metrics", "{tmp}/m.json"], "--metrics needs labels"),
    (["{csv}", "--out", "{tmp}/o.csv", "--top-k", "2"], "--top-k has no place in the kaggle format"),
    (["{csv}", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--dataset", "mnist", "--split", "nope"], "invalid choice"),
])
def test_usage_errors(quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args, match) -> None:
    images, _ = test_images()
    source = kaggle_csv(tmp_path / "test.csv", images[:3])
    argv = ["predict", str(quick_run), *(a.format(csv=source, tmp=tmp_path) for a in args)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "m.json").exists()


# --------------------------------------------------------------------------- memory


def test_a_large_csv_streams_in_bounded_memory(quick_run: Path, tmp_path: Path) -> None:
    """30,000 rows (55 MB of text, 23.5 MB as uint8): read, predicted and written 500 at a time."""
    from mnistlab.predict import Predictor
    from mnistlab.predict_files import predict_to_csv
    from mnistlab.predict_inputs import open_inputs

    images, _ = test_images()
    block = kaggle_csv(tmp_path / "block.csv", images).read_text().split("\n", 1)[1]  # 200 rows
    big = tmp_path / "big.csv"
    with open(big, "w") as f:
        f.write(",".join(PIXELS) + "\n" + block * 150)
    assert big.stat().st_size > 50_000_000
    predictor = Predictor.from_run(quick_run)
    predictor.batch_size = 500
    tracemalloc.start()
    try:
        sources = open_inputs([str(big)], predictor)
        outcome = predict_to_csv(predictor, sources, tmp_path / "sub.csv", "kaggle", batch_size=500)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.images == 30_000 and len((tmp_path / "sub.csv").read_text().splitlines()) == 30_001
    # A batch of text lines (~1 MB), its uint8 and float copies (~2 MB): far below the 23.5 MB of pixels.
    assert peak < 12_000_000, f"peak traced memory {peak / 1e6:.1f} MB"


def test_gzipped_idx_detection_reads_only_the_header(tmp_path: Path) -> None:
    from mnistlab.data.idx import is_idx_file

    write_idx(tmp_path / "a.gz", np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "b.bin").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 12)
    (tmp_path / "c.png").write_bytes(gzip.compress(b"not idx"))
    (tmp_path / "empty").write_bytes(b"")
    assert is_idx_file(tmp_path / "a.gz", (3, 4)) and is_idx_file(tmp_path / "b.bin", (3,))
    assert not is_idx_file(tmp_path / "a.gz", (1,))
    assert not any(is_idx_file(tmp_path / n) for n in ("c.png", "empty", "missing"))
    assert os.path.getsize(tmp_path / "a.gz") > 0


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "how"), [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_mid_file_leaves_nothing_behind(quick_run: Path, tmp_path: Path, sig: int, code: int,
                                                 how: str) -> None:
    """Ctrl-C or `timeout` while a large CSV is being predicted: exit 130/143, one line, no file, no temp file."""
    images, _ = test_images()
    block = kaggle_csv(tmp_path / "block.csv", images).read_text().split("\n", 1)[1]
    big = tmp_path / "big.csv"
    big.write_text(",".join(PIXELS) + "\n" + block * 150)  # 30,000 rows
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "predict", str(quick_run), str(big),
                             "--out", str(out_dir / "sub.csv"), "--batch-size", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not leftovers(out_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until the temp file exists: the predictions are being written
    assert leftovers(out_dir), "the temp file never appeared"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"mnistlab: {how}; {out_dir / 'sub.csv'} was not written"]
    assert list(out_dir.iterdir()) == []


def test_a_text_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    from mnistlab.errors import CheckpointError
    from mnistlab.predict import Predictor

    with pytest.raises(CheckpointError, match="is a text run's checkpoint; predict text with `mnistlab text predict`"):
        Predictor.from_checkpoint({"config": {"task": "text"}, "model": {"name": "lstm"}, "data": {}}, "text.pt")
