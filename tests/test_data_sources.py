"""Loading by name: catalog datasets, image folders and CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnistlab.data import DataWarning, get_dataset_spec, load_dataset, resolve_data_root
from mnistlab.errors import DataError, UsageError

# ---------------------------------------------------------------- catalog and data root


def test_fake_mnist_root_loads(fake_mnist_root: Path) -> None:
    with pytest.warns(DataWarning, match="not the official mnist files"):
        data = load_dataset("mnist", str(fake_mnist_root))
    assert data.name == "mnist" and data.location == str(fake_mnist_root / "mnist")
    assert data.train_images.shape == (600, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (200, 1, 28, 28)
    assert data.train_labels.dtype == torch.int64
    assert torch.bincount(data.train_labels).tolist() == [60] * 10
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 28)
    # Not the official files, so mean/std come from these images, not the catalog.
    expected = data.train_images.double().div(255)
    assert data.mean[0] == pytest.approx(float(expected.mean()), abs=1e-9)
    assert data.std[0] == pytest.approx(float(expected.std(unbiased=False)), abs=1e-9)


def test_missing_files_message_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("kmnist", str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "kmnist") in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "mnistlab data download --dataset kmnist" in message
    assert "\n" not in message


def test_unknown_name_is_a_usage_error_with_suggestions() -> None:
    with pytest.raises(UsageError, match="did you mean kmnist"):
        load_dataset("kmnst")
    with pytest.raises(UsageError, match="folder:PATH"):
        get_dataset_spec("imagenet")


def test_resolve_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_root("/x/y") == Path("/x/y")
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("MNISTLAB_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "mnistlab"


def test_catalog_entries() -> None:
    for name in ("mnist", "fashion-mnist", "kmnist"):
        spec = get_dataset_spec(name)
        assert len(spec.classes) == 10 and set(spec.files) == {
            "train_images", "train_labels", "test_images", "test_labels"
        }
        assert all(f.endswith(".gz") for f, _ in spec.files.values())
        assert spec.mirrors and 0 < spec.mean < 1 and 0 < spec.std < 1
    assert get_dataset_spec("mnist").has_checksums
    assert get_dataset_spec("fashion-mnist").classes[0] == "T-shirt/top"
    assert get_dataset_spec("kmnist").classes[-1] == "wo"


# ---------------------------------------------------------------- image folders


def _image(value: int, size: int = 28, mode: str = "L") -> Image.Image:
    img = Image.new("L", (size, size), 0)
    img.paste(value, (size // 4, size // 4, size // 2, size // 2))
    return img.convert(mode)


BRIGHTNESS = {"cat": 40, "dog": 80, "emu": 120}  # so a test can tell which folder an image came from


def _make_class_folder(folder: Path, counts: dict[str, int], fmt: str = "png") -> None:
    for cls, count in counts.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _image(BRIGHTNESS.get(cls, 200)).save(folder / cls / f"{i:03d}.{fmt}")


def test_folder_with_train_and_test(tmp_path: Path) -> None:
    _make_class_folder(tmp_path / "train", {"cat": 3, "dog": 4, "emu": 2})
    _make_class_folder(tmp_path / "test", {"cat": 1, "emu": 2})  # no dog: labels keep their indices
    (tmp_path / "train" / ".hidden").mkdir()
    _image(255).save(tmp_path / "train" / ".hidden" / "x.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\x00")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.name == f"folder:{tmp_path}"
    assert data.classes == ["cat", "dog", "emu"]
    assert data.train_images.shape == (9, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert data.test_labels.tolist() == [0, 2, 2]
    assert int(data.train_images[0].max()) == 40 and int(data.test_images[-1].max()) == 120
    expected = data.train_images.double().div(255)
    assert data.mean[0] == pytest.approx(float(expected.mean()))
    assert data.std[0] == pytest.approx(float(expected.std(unbiased=False)))


def test_folder_converts_colour_and_resizes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(3):  # 3 per class: 20% of each class rounds to one test image
        _image(200, size=56, mode="RGB").save(tmp_path / "a" / f"big{i}.jpg")
    _image(100, size=14).save(tmp_path / "b" / "small.bmp")
    _image(100, size=14).save(tmp_path / "b" / "small2.bmp")
    Image.new("RGBA", (28, 28), (255, 255, 255, 255)).save(tmp_path / "b" / "rgba.PNG")
    data = load_dataset(f"folder:{tmp_path}", seed=0)
    images = torch.cat([data.train_images, data.test_images])
    assert images.shape[1:] == (1, 28, 28)
    assert len(images) == 6 and data.classes == ["a", "b"]


def test_folder_without_test_holds_out_a_seeded_20_percent(tmp_path: Path) -> None:
    _make_class_folder(tmp_path, {"x": 10, "y": 10})
    a = load_dataset(f"folder:{tmp_path}", seed=1)
    b = load_dataset(f"folder:{tmp_path}", seed=1)
    c = load_dataset(f"folder:{tmp_path}", seed=2)
    assert len(a.train_labels) == 16 and len(a.test_labels) == 4
    assert torch.bincount(a.test_labels).tolist() == [2, 2]  # stratified
    assert torch.equal(a.test_images, b.test_images)
    assert a.location == str(tmp_path.resolve()) and a.classes == c.classes


def test_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")


def test_test_class_unknown_to_train_is_a_data_error(tmp_path: Path) -> None:
    _make_class_folder(tmp_path / "train", {"a": 1})
    _make_class_folder(tmp_path / "test", {"a": 1, "zzz": 1})
    with pytest.raises(DataError, match="zzz"):
        load_dataset(f"folder:{tmp_path}")


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    _make_class_folder(tmp_path, {"a": 2})
    (tmp_path / "a" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{tmp_path}")


# ---------------------------------------------------------------- CSV


def _csv_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (np.arange(n) % 10), rng.integers(0, 256, (n, 784))


def _write_csv(path: Path, labels: np.ndarray, pixels: np.ndarray, header: bool = True) -> None:
    lines = ["label," + ",".join(f"pixel{i}" for i in range(784))] if header else []
    lines += [",".join(map(str, [int(label), *row])) for label, row in zip(labels, pixels)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("header", [True, False])
def test_csv_loads_with_or_without_header(tmp_path: Path, header: bool) -> None:
    labels, pixels = _csv_rows(50)
    path = tmp_path / "digits.csv"
    _write_csv(path, labels, pixels, header)
    data = load_dataset(f"csv:{path}", seed=3)
    assert data.classes == [str(i) for i in range(10)]
    assert len(data.train_labels) == 40 and len(data.test_labels) == 10
    # Every row ends up in exactly one split, unchanged.
    all_images = torch.cat([data.train_images, data.test_images]).reshape(50, 784).long()
    all_labels = torch.cat([data.train_labels, data.test_labels])
    rows = {tuple(r): int(label) for r, label in zip(pixels.tolist(), labels.tolist())}
    got = {tuple(r): int(label) for r, label in zip(all_images.tolist(), all_labels.tolist())}
    assert got == rows


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [("3," + ",".join(["0"] * 783), "line 4 has 784 fields, expected 785"),
     ("3," + ",".join(["0"] * 783) + ",x7", "line 4, field 785 is 'x7'"),
     ("3," + ",".join(["0"] * 783) + ",256", "line 4 has a pixel outside 0..255"),
     ("-1," + ",".join(["0"] * 784), "line 4 has a negative label")],
    ids=["short row", "not a number", "pixel out of range", "negative label"],
)
def test_bad_csv_row_names_the_line(tmp_path: Path, bad_line: str, match: str) -> None:
    labels, pixels = _csv_rows(5)
    path = tmp_path / "bad.csv"
    _write_csv(path, labels, pixels)
    lines = path.read_text().splitlines()
    lines[3] = bad_line  # line 4 of the file (header is line 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"csv:{path}")
    assert str(path) in str(info.value)


def test_empty_or_missing_csv(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset(f"csv:{tmp_path / 'empty.csv'}")
    (tmp_path / "header.csv").write_text("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")
    with pytest.raises(DataError, match="no data rows"):
        load_dataset(f"csv:{tmp_path / 'header.csv'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")


@pytest.mark.parametrize("header", [True, False])
def test_csv_with_a_byte_order_mark_keeps_every_row(tmp_path: Path, header: bool) -> None:
    labels, pixels = _csv_rows(30)
    path = tmp_path / "excel.csv"
    _write_csv(path, labels, pixels, header)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # what Excel's "CSV UTF-8" writes
    data = load_dataset(f"csv:{path}")
    assert len(data.train_labels) + len(data.test_labels) == 30


def test_csv_first_row_with_a_text_label_is_a_row_not_a_header(tmp_path: Path) -> None:
    labels, pixels = _csv_rows(30)
    path = tmp_path / "typo.csv"
    _write_csv(path, labels, pixels, header=False)
    lines = path.read_text().splitlines()
    lines[0] = "seven" + lines[0][1:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 1, field 1 is 'seven', not an integer"):
        load_dataset(f"csv:{path}")
    # A header that numbers its pixel columns is still a header.
    path.write_text("label," + ",".join(map(str, range(784))) + "\n" + "\n".join(lines[1:]) + "\n")
    assert len(load_dataset(f"csv:{path}").classes) == 10


def test_csv_label_far_out_of_range_is_refused_at_once(tmp_path: Path) -> None:
    import time

    labels, pixels = _csv_rows(10)
    labels = labels.copy()
    labels[6] = 100_000_000  # a typo: would be a table of 10^8 classes
    path = tmp_path / "typo.csv"
    _write_csv(path, labels, pixels)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"line 8 has label 100000000; labels must be 0..255"):
        load_dataset(f"csv:{path}")
    assert time.perf_counter() - start < 5


def test_csv_too_small_for_a_test_split_is_refused(tmp_path: Path) -> None:
    labels, pixels = _csv_rows(20)
    path = tmp_path / "few.csv"
    _write_csv(path, labels, pixels)  # 2 rows per class: 20% of 2 rounds to 0
    with pytest.raises(DataError, match="too few rows to hold out a test split.*largest class has 2"):
        load_dataset(f"csv:{path}")
