"""`mnistlab predict`: image loading, MNIST-style preprocessing, output formats, errors, and the
round trip (MNIST's test set written as PNG files predicts as `mnistlab evaluate` scores it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mnistlab.predict import (
    MAX_PIXELS,
    ImageError,
    expand_inputs,
    open_image,
    preprocess_array,
    preprocess_image,
    to_grayscale,
)


def bar_digit(h: int = 200, w: int = 120, ink: int = 255, bg: int = 0) -> np.ndarray:
    """A thick vertical stroke (a "1") of value `ink` on `bg`, uint8 [h, w]."""
    a = np.full((h, w), bg, np.uint8)
    a[h // 5 : -h // 5, w // 2 - 8 : w // 2 + 8] = ink
    return a


def save(img: Image.Image, path: Path, fmt: str | None = None) -> Path:
    img.save(path, format=fmt)
    return path


# --------------------------------------------------------------------------- loading


def test_open_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "nope.png")


def test_open_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        open_image(tmp_path / "e.png")


def test_open_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        open_image(tmp_path / "t.png")


def test_open_refuses_other_formats(tmp_path: Path) -> None:
    p = save(Image.new("L", (28, 28)), tmp_path / "x.png", "TIFF")  # a TIFF behind a .png name
    with pytest.raises(ImageError, match="TIFF"):
        open_image(p)


def test_open_refuses_huge_images_from_the_header(tmp_path: Path) -> None:
    # 5000 x 4500 = 22.5 MP: refused from the header (the 1-bit PNG is only a few KB).
    p = save(Image.new("1", (5000, 4500)), tmp_path / "big.png")
    assert p.stat().st_size < 200_000
    with pytest.raises(ImageError, match="too large"):
        open_image(p)
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS


def test_open_truncated_image(tmp_path: Path) -> None:
    p = save(Image.fromarray(bar_digit()), tmp_path / "d.png")
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(ImageError):
        open_image(p)


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif")])
def test_open_accepted_formats(tmp_path: Path, fmt: str, suffix: str) -> None:
    p = save(Image.fromarray(bar_digit()), tmp_path / f"d.{suffix}", fmt)
    assert open_image(p).format == fmt


# --------------------------------------------------------------------------- preprocessing


def check_mnist_like(x: np.ndarray) -> None:
    """28x28 in [0, 1], ink inside a 20 px box (longer side 20), centre of mass near the centre."""
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    rows, cols = np.nonzero(x > 0.05)
    assert max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) in (19, 20, 21)
    ys, xs = np.indices(x.shape)
    cy, cx = (ys * x).sum() / x.sum(), (xs * x).sum() / x.sum()
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0
    assert x[0].max() == 0 and x[:, 0].max() == 0  # black border, white digit


def test_white_on_black_is_mnist_like() -> None:
    check_mnist_like(preprocess_array(bar_digit() / 255.0))


def test_polarity_does_not_matter() -> None:
    light = preprocess_array(bar_digit() / 255.0)
    dark = preprocess_array(bar_digit(ink=0, bg=255) / 255.0)
    check_mnist_like(dark)
    assert np.abs(light - dark).max() < 1e-5


def test_aspect_ratio_kept() -> None:
    x = preprocess_array(bar_digit() / 255.0)
    rows, cols = np.nonzero(x > 0.05)
    assert rows.max() - rows.min() + 1 >= 19  # the tall side fills 20 px
    assert cols.max() - cols.min() + 1 <= 5  # a bar is not stretched into a square


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "I;16", "LA"])
def test_modes(mode: str) -> None:
    img = Image.fromarray(bar_digit(ink=0, bg=255)).convert(mode)
    check_mnist_like(preprocess_image(img))


def test_rgba_composited_on_white() -> None:
    # Black ink drawn only through alpha on a transparent canvas: on white it is dark-on-light.
    a = np.zeros((200, 120, 4), np.uint8)
    a[..., 3] = bar_digit()
    x = preprocess_image(Image.fromarray(a, "RGBA"))
    check_mnist_like(x)
    assert np.abs(x - preprocess_array(bar_digit() / 255.0)).max() < 1e-5
    assert to_grayscale(Image.fromarray(a, "RGBA"))[0, 0] == 1.0  # transparent -> white


def test_uneven_lighting_is_not_ink() -> None:
    # A "photo": dark ink on paper lit from one side (bright 250 -> dim 110), plus sensor noise.
    rng = np.random.default_rng(0)
    light = np.linspace(110, 250, 300)[None, :] * np.ones((400, 1))
    ink = bar_digit(400, 300) / 255.0
    photo = np.clip(light * (1 - 0.7 * ink) + rng.normal(0, 5, light.shape), 0, 255).astype(np.uint8)
    x = preprocess_array(photo / 255.0)
    check_mnist_like(x)
    clean = preprocess_array(bar_digit(400, 300) / 255.0)
    assert np.abs(x - clean).mean() < 0.05


def test_mnist_digit_is_left_unchanged() -> None:
    rng = np.random.default_rng(1)
    a = np.zeros((28, 28), np.float32)
    a[6:22, 10:18] = rng.uniform(0.3, 1.0, (16, 8))
    assert np.array_equal(preprocess_array(a), a)


def test_blank_image_gives_black() -> None:
    assert preprocess_array(np.ones((50, 50), np.float32)).max() == 0
    assert preprocess_array(np.zeros((50, 50), np.float32)).max() == 0


def test_small_noise_ignored() -> None:
    a = bar_digit() / 255.0
    a[5, 5] = 0.1  # a faint speck far from the digit must not widen the bounding box
    assert np.abs(preprocess_array(a) - preprocess_array(bar_digit() / 255.0)).max() < 1e-5


def test_expand_inputs(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt", "c.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    got = [Path(p).name for p in expand_inputs([tmp_path, tmp_path / "notes.txt"])]
    assert got == ["a.JPG", "b.png", "c.gif", "notes.txt"]


# --------------------------------------------------------------------------- the command


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnistlab", *args], capture_output=True, text=True, timeout=timeout)


def test_predict_command_formats_and_errors(quick_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(bar_digit()).save(folder / "one.png")
    Image.fromarray(bar_digit(ink=0, bg=255)).convert("RGB").save(folder / "two.jpg")
    (folder / "bad.png").write_text("not an image")
    missing = tmp_path / "missing.png"

    r = cli("predict", str(quick_run), str(folder), str(missing))
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    path, digit, conf = lines[0].split("  ")
    assert path.endswith("one.png") and digit in [str(i) for i in range(10)] and 0 <= float(conf) <= 1
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 2 and "bad.png" in errors[0] and "missing.png" in errors[1]

    r = cli("predict", str(quick_run), str(folder / "one.png"), "--top-k", "3")
    assert r.returncode == 0, r.stderr
    pairs = r.stdout.split("  ")[1:]
    assert len(pairs) == 3 and all(":" in p for p in pairs)
    probs = [float(p.split(":")[1]) for p in pairs]
    assert probs == sorted(probs, reverse=True)

    r = cli("predict", str(quick_run), str(folder / "one.png"), str(folder / "two.jpg"), "--json", "--top-k", "2")
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(o["path"]).name for o in objs] == ["one.png", "two.jpg"]
    for o in objs:
        assert set(o) == {"path", "prediction", "confidence", "top_k"}
        assert len(o["top_k"]) == 2 and o["top_k"][0]["label"] == o["prediction"]
        assert o["top_k"][0]["probability"] == pytest.approx(o["confidence"])


def test_empty_image_argument_is_a_usage_error(quick_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mnistlab.cli import main

    # `mnistlab predict RUN "$UNSET"` must not predict every image in the current folder.
    monkeypatch.chdir(tmp_path)
    Image.fromarray(bar_digit()).save(tmp_path / "here.png")
    assert main(["predict", str(quick_run), ""]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "empty" in err and len(err.strip().splitlines()) == 1


def test_predict_bad_run(tmp_path: Path) -> None:
    r = cli("predict", str(tmp_path / "norun"), str(tmp_path))
    assert r.returncode == 1 and "does not exist" in r.stderr


# --------------------------------------------------------------------------- the round trip


@pytest.mark.slow
def test_round_trip_matches_evaluate(real_data_root: Path, tmp_path: Path) -> None:
    """Train fast on MNIST, write the 10,000 test images as PNG, predict them through the CLI:
    the accuracy must equal `mnistlab evaluate`'s within 0.1%."""
    import mnistlab
    from mnistlab.data import load_dataset

    run = mnistlab.train(mnistlab.TrainConfig(model="fast", data_dir=str(real_data_root), out=str(tmp_path / "runs"),
                                              progress="quiet", plots=False))
    data = load_dataset("mnist", str(real_data_root))
    images, labels = data.test_images.numpy(), data.test_labels.numpy()
    folder = tmp_path / "test-png"
    folder.mkdir()
    truth: dict[str, int] = {}
    for i, (img, label) in enumerate(zip(images, labels)):
        path = folder / f"{i:05d}.png"
        Image.fromarray(img[0]).save(path, compress_level=1)
        truth[str(path)] = int(label)

    started = time.perf_counter()
    r = cli("predict", str(run.path), str(folder), "--json")
    seconds = time.perf_counter() - started
    assert r.returncode == 0, r.stderr
    preds: list[dict[str, Any]] = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(preds) == 10_000
    predicted_acc = float(np.mean([int(p["prediction"]) == truth[p["path"]] for p in preds]))

    r = cli("evaluate", str(run.path), "--json", "--no-plots")
    assert r.returncode == 0, r.stderr
    evaluated_acc = json.loads(r.stdout)["accuracy"]
    print(f"round trip: predict {predicted_acc:.4f} vs evaluate {evaluated_acc:.4f} ({seconds:.1f} s for 10k PNGs)")
    assert abs(predicted_acc - evaluated_acc) <= 0.001
    assert evaluated_acc > 0.95
