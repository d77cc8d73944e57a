"""Colour and other sizes: folder:PATH with --channels/--image-size (aspect kept, memory budget),
crop+flip augmentation, models at C x H x W, and a colour run through train, evaluate, predict,
export, serve and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mnistlab
from mnistlab.cli import main
from mnistlab.data import BatchIterator, load_dataset
from mnistlab.data.augment import Augment, augment_kind
from mnistlab.data.images import open_image, read_image
from mnistlab.data.loader import epoch_generator, normalisation, shift_images
from mnistlab.data.synthetic import COLOUR_CLASSES, write_colour_folder
from mnistlab.errors import DataError, UsageError
from mnistlab.models import count_parameters, create_model, list_models


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


# --------------------------------------------------------------------------- reading one image


def test_non_square_image_keeps_its_aspect_and_is_centred(tmp_path: Path) -> None:
    red = np.zeros((32, 64, 3), np.uint8)
    red[..., 0] = 200
    x = read_image(_png(tmp_path / "wide.png", red), channels=3, size=32)
    assert x.shape == (3, 32, 32) and x.dtype == np.uint8
    assert (x[:, :8] == 0).all() and (x[:, 24:] == 0).all()  # black bars above and below
    assert (x[0, 8:24] == 200).all() and (x[1:, 8:24] == 0).all()  # the picture, not squashed
    tall = read_image(_png(tmp_path / "tall.png", np.full((60, 20), 255, np.uint8)), channels=1, size=30)
    assert tall.shape == (1, 30, 30)
    assert (tall[0, :, :10] == 0).all() and (tall[0, :, 20:] == 0).all() and (tall[0, :, 10:20] == 255).all()


def test_gray_into_three_channels_and_colour_into_one(tmp_path: Path) -> None:
    gray = read_image(_png(tmp_path / "g.png", np.full((8, 8), 90, np.uint8)), channels=3, size=8)
    assert (gray == 90).all()  # the gray value in every channel
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 200
    one = read_image(_png(tmp_path / "c.png", rgb), channels=1, size=8)
    assert (one == round(0.587 * 200)).all()  # the usual luma weights
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent: composited on white, as for gray
    assert (read_image(_png(tmp_path / "t.png", rgba, "RGBA"), channels=3, size=8) == 255).all()


# --------------------------------------------------------------------------- folder:PATH


def _folder(tmp_path: Path, colour_in: str | None = None, gray_as_rgb: bool = False) -> Path:
    """Two classes of 4 train + 2 test 20x10 gray images; optionally one colour image in `colour_in`."""
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                g = rng.integers(0, 256, (10, 20), dtype=np.uint8)
                _png(root / split / cls / f"{i}.png", np.stack([g] * 3, -1) if gray_as_rgb else g)
    if colour_in:
        _png(root / colour_in / "a" / "colour.png", rng.integers(0, 256, (10, 20, 3), dtype=np.uint8))
    return root


def test_channels_auto_decides_from_the_training_images(tmp_path: Path) -> None:
    gray = load_dataset(f"folder:{_folder(tmp_path / '1')}")
    assert gray.train_images.shape == (8, 1, 28, 28) and gray.test_images.shape == (4, 1, 28, 28)
    assert "auto" in gray.note
    # RGB files whose pixels are gray are gray; one colour training image makes the set colour.
    assert load_dataset(f"folder:{_folder(tmp_path / '2', gray_as_rgb=True)}").in_channels == 1
    colour = load_dataset(f"folder:{_folder(tmp_path / '3', colour_in='train')}")
    assert colour.train_images.shape == (9, 3, 32, 32) and colour.test_images.shape == (4, 3, 32, 32)
    assert len(colour.mean) == 3 and len(colour.std) == 3
    # Only the training images decide: a colour test image is read in the training images' shape.
    assert load_dataset(f"folder:{_folder(tmp_path / '4', colour_in='test')}").in_channels == 1


def test_channels_and_image_size_flags(tmp_path: Path) -> None:
    root = _folder(tmp_path, colour_in="train")
    assert load_dataset(f"folder:{root}", channels=1).train_images.shape[1:] == (1, 28, 28)
    assert load_dataset(f"folder:{root}", channels="3", image_size=12).train_images.shape[1:] == (3, 12, 12)
    for bad, match in (({"channels": 2}, "choose auto, 1 or 3"), ({"image_size": 2}, "from 4 to 1024")):
        with pytest.raises(UsageError, match=match):
            load_dataset(f"folder:{root}", **bad)


def test_over_the_memory_budget_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path, colour_in="train")
    (root / "train" / "a" / "broken.png").write_bytes(b"not a png")  # never reached: nothing is decoded
    monkeypatch.setenv("MNISTLAB_MEMORY_BUDGET", "10K")
    code = main(["data", "info", "--dataset", f"folder:{root}", "--image-size", "64"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "14 images of 3x64x64" in err and "168.0 KiB" in err and "lower --image-size (now 64)" in err
    assert "--channels 1" in err and "budget of 10.0 KiB" in err
    with pytest.raises(UsageError, match="bad memory size"):
        monkeypatch.setenv("MNISTLAB_MEMORY_BUDGET", "lots")
        load_dataset(f"folder:{root}")


def test_data_info_and_show_in_colour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_colour_folder(tmp_path / "shapes", n_train=40, n_test=20)
    assert main(["data", "info", "--dataset", f"folder:{root}"]) == 0
    out = capsys.readouterr().out
    assert "images    3x32x32 uint8, 10 classes" in out and "(3 channels (auto: the training images have colour))" in out
    assert "memory    train 120.0 KiB + test 60.0 KiB = 180.0 KiB (uint8; budget" in out
    grid = tmp_path / "grid.png"
    assert main(["data", "show", "--dataset", f"folder:{root}", "--n", "8", "--out", str(grid)]) == 0
    pixels = np.asarray(Image.open(grid).convert("RGB")).astype(int)
    assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 100).mean() > 0.01  # drawn in colour, not gray


def test_made_colour_folder_is_reproducible_and_needs_colour(tmp_path: Path) -> None:
    a = load_dataset(f"folder:{write_colour_folder(tmp_path / 'a', 30, 10)}")
    b = load_dataset(f"folder:{write_colour_folder(tmp_path / 'b', 30, 10)}")
    assert torch.equal(a.train_images, b.train_images) and a.classes == sorted(COLOUR_CLASSES)
    gray = load_dataset(f"folder:{tmp_path / 'a'}", channels=1)
    assert gray.in_channels == 1  # the same folder read as gray


# --------------------------------------------------------------------------- augmentation


def test_augment_picks_shifts_for_digits_and_crop_flip_for_colour() -> None:
    assert augment_kind(True, 1, 28) == Augment(2) and augment_kind(True, 3, 32) == Augment(4, flip=True)
    assert augment_kind(False, 3, 32) is None and augment_kind(True, 3, 64) == Augment(8, flip=True)


def test_crop_flip_batches_are_the_drawn_crops_and_flips() -> None:
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(24) % 3
    it = BatchIterator(images, labels, batch_size=10, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), shuffle=True,
                       seed=7, augment=Augment(1, flip=True))
    it.set_epoch(3)
    got = torch.cat([x for x, _ in it])
    gen = epoch_generator(7, 3)  # the draws, in the iterator's order: order, shifts, then flips
    order = torch.randperm(24, generator=gen)
    shifts = torch.randint(-1, 2, (24, 2), generator=gen)
    flips = torch.randint(0, 2, (24,), generator=gen).bool()
    assert 0 < int(flips.sum()) < 24
    moved = shift_images(images, shifts, max_shift=1)
    moved[flips] = moved[flips].flip(-1)
    scale, shift = normalisation((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 3)
    expected = moved[order].float() * scale.float() + shift.float()
    torch.testing.assert_close(got, expected)
    # Seeded and resumable: epoch 3 again, from a fresh iterator, is the same batches.
    again = BatchIterator(images, labels, batch_size=10, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), shuffle=True,
                          seed=7, augment=Augment(1, flip=True))
    again.set_epoch(3)
    torch.testing.assert_close(torch.cat([x for x, _ in again]), got)


def test_digit_shifts_are_unchanged_by_the_flip_option() -> None:
    images = torch.randint(0, 256, (16, 1, 6, 6), dtype=torch.uint8)
    kwargs = dict(batch_size=5, mean=0.5, std=0.3, shuffle=True, seed=1)
    a, b = BatchIterator(images, images[:, 0, 0, 0].long(), augment=True, **kwargs), \
        BatchIterator(images, images[:, 0, 0, 0].long(), augment=Augment(2), **kwargs)
    for (xa, _), (xb, _) in zip(a, b):
        torch.testing.assert_close(xa, xb)


# --------------------------------------------------------------------------- models


def test_cnn_bn_at_3x32x32_is_the_tutorials_network() -> None:
    model = create_model("cnn-bn", in_channels=3, image_size=32)
    layers = [(type(m).__name__, getattr(m, "in_channels", getattr(m, "in_features", None)),
               getattr(m, "out_channels", getattr(m, "out_features", None))) for m in model
              if not isinstance(m, (torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.BatchNorm2d))]
    assert layers == [("Conv2d", 3, 32), ("Conv2d", 32, 64), ("Conv2d", 64, 128), ("Flatten", None, None),
                      ("Dropout", None, None), ("Linear", 2048, 512), ("Dropout", None, None), ("Linear", 512, 128),
                      ("Linear", 128, 10)]
    assert [type(m).__name__ for m in model][:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert count_parameters(model) == 1_209_738
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_colour_or_says_why_in_one_line(name: str) -> None:
    try:
        model = create_model(name, in_channels=3, image_size=32, num_classes=10)
    except UsageError as exc:
        assert "\n" not in str(exc) and "3x32x32" in str(exc)
        assert name == "dnn"  # its first hidden_dims entry is the input size: the message gives the fix
        return
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    if name in ("rnn", "lstm", "gru"):
        assert model.rnn.input_size == 3 * 32  # rows of C*W values


def test_models_command_for_cifar10(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "parameters for 3x32x32 images and 10 classes (cifar10)"
    assert any(line.startswith("cnn-bn") and "1,209,738" in line for line in out.splitlines())
    dnn = [line for line in out.splitlines() if line.startswith("dnn")]
    assert len(dnn) == 1 and "cannot take 3x32x32" in dnn[0] and "hidden_dims=3072,512,256,128" in dnn[0]
    tiny = create_model  # a size a model cannot take, said in one line
    with pytest.raises(UsageError, match="cnn-basic cannot handle 8x8"):
        tiny("cnn-basic", in_channels=3, image_size=8)


# --------------------------------------------------------------------------- a colour run end to end


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A cnn-strided run with --augment on a small made colour folder (16x16, to be quick)."""
    base = tmp_path_factory.mktemp("colour")
    root = write_colour_folder(base / "shapes", n_train=120, n_test=40, size=16)
    cfg = mnistlab.TrainConfig(model="cnn-strided", dataset=f"folder:{root}", image_size=16, epochs=2, augment=True,
                               out=str(base / "runs"), progress="quiet", batch_size=32)
    return mnistlab.train(cfg).path, root


@pytest.mark.slow  # trains a run (the module's colour_run)
def test_colour_run_records_its_shape_and_statistics(colour_run: tuple[Path, Path]) -> None:
    from mnistlab.training.checkpoint import load_checkpoint

    run, _ = colour_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["image_shape"] == [3, 16, 16] and summary["status"] == "completed"
    data = load_checkpoint(run / "checkpoints" / "best.pt")["data"]
    assert data["in_channels"] == 3 and data["image_size"] == 16 and len(data["mean"]) == 3
    for plot in ("samples", "misclassified"):
        pixels = np.asarray(Image.open(run / "plots" / f"{plot}.png").convert("RGB")).astype(int)
        assert (np.abs(pixels[..., 0] - pixels[..., 1]) > 60).mean() > 0.005, plot  # colour pictures


@pytest.mark.slow  # trains a run (the module's colour_run)
def test_colour_predict_matches_evaluate(colour_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from mnistlab.predict import Predictor

    run, root = colour_run
    metrics = mnistlab.evaluate(run)
    predictor = Predictor.from_run(run)
    files = sorted(str(p) for p in (root / "test").rglob("*.png"))
    results, errors = predictor.predict_paths(files, top_k=1)
    assert not errors and len(results) == 40
    truth = [Path(f).parent.name for f in files]
    accuracy = np.mean([r.prediction == t for r, t in zip(results, truth)])
    assert accuracy == pytest.approx(metrics["accuracy"])  # the same images, read as in training
    # --preprocess photo is the digits' preprocessing: refused for a colour run, in one line.
    assert main(["predict", str(run), files[0], "--preprocess", "photo"]) == 2
    assert "colour" in capsys.readouterr().err


@pytest.mark.slow  # trains a run (the module's colour_run)
def test_colour_export_takes_the_runs_shape(colour_run: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from mnistlab.export import export_run

    result = export_run(colour_run[0], "onnx", tmp_path / "m.onnx")
    assert (result.in_channels, result.image_size) == (3, 16) and result.sample_source == "test"
    assert result.max_diff <= 1e-4


@pytest.mark.slow  # trains a run (the module's colour_run)
def test_colour_serve_offers_an_upload(colour_run: tuple[Path, Path]) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mnistlab.serve import build_app

    client = TestClient(build_app(colour_run[0]), base_url="http://127.0.0.1")
    health = client.get("/api/health").json()
    assert health["in_channels"] == 3 and len(health["labels"]) == 10
    page = client.get("/").text
    assert 'type="file"' in page and "info.in_channels !== 3" in page
    png = next((colour_run[1] / "test").rglob("*.png")).read_bytes()
    answer = client.post("/api/predict", files={"image": ("x.png", png, "image/png")}).json()
    assert answer["prediction"] in health["labels"] and len(answer["probabilities"]) == 10


@pytest.mark.slow  # trains a run (the module's colour_run)
def test_colour_run_resumes_to_the_same_result(colour_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, root = colour_run
    common = dict(model="cnn-strided", dataset=f"folder:{root}", image_size=16, augment=True, out=str(tmp_path),
                  progress="quiet", batch_size=32, plots=False)
    whole = mnistlab.train(mnistlab.TrainConfig(epochs=2, name="whole", **common))
    half = mnistlab.train(mnistlab.TrainConfig(epochs=1, name="half", **common))
    resumed = mnistlab.train(mnistlab.TrainConfig(resume=str(half.path), epochs=2, progress="quiet"))
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]


@pytest.mark.slow  # trains a run (the module's colour_run)
def test_folder_shape_is_decided_once(colour_run: tuple[Path, Path], tmp_path: Path) -> None:
    """evaluate reads a folder run's data in the shape it trained on, not as `auto` would decide it now."""
    from mnistlab.evaluation import run_dataset

    run, root = colour_run
    config = mnistlab.runs.load_run(run).config
    data = run_dataset(config, sorted(COLOUR_CLASSES), shape={"in_channels": 1, "image_size": 8})
    assert data.train_images.shape[1:] == (1, 8, 8)
    with pytest.raises(DataError):
        run_dataset({**config, "dataset": f"folder:{tmp_path / 'gone'}"}, sorted(COLOUR_CLASSES))
