"""IDX reading/writing, and every way a catalog dataset's files can be bad."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mnistlab.data import load_dataset, read_idx, write_idx
from mnistlab.data.idx import idx_bytes
from mnistlab.errors import DataError


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4),
        np.array([0, 9, 255, 7], dtype=np.uint8),
        np.arange(-6, 6, dtype=np.int32).reshape(2, 6),
        np.linspace(0, 1, 10, dtype=np.float32),
    ],
    ids=["uint8-3d", "uint8-1d", "int32", "float32"],
)
def test_round_trip(tmp_path: Path, array: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"x-idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert not [p for p in tmp_path.iterdir() if p != path], "write_idx left a temp file"


def test_header_matches_the_mnist_layout(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[4:16] == (2).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    assert len(data) == 16 + 2 * 28 * 28


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def _corrupt_cases(tmp_path: Path) -> dict[str, Path]:
    good = idx_bytes(np.arange(4 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(4, 28, 28))
    cases = {
        "wrong magic": b"\x08\x03\x00\x00" + good[4:],
        "bad type code": good[:2] + b"\x07" + good[3:],
        "truncated raw": good[:-100],
        "trailing bytes": good + b"\x00" * 7,
        "dims mismatch": good[:4] + (5).to_bytes(4, "big") + good[8:],
        "truncated header": good[:10],
        "empty": b"",
        # 2^31 * 2^31 * 4 = 2^64 wraps to 0 in int64: a header-only file would look complete.
        "dims overflow int64": b"\x00\x00\x08\x03" + (2**31).to_bytes(4, "big") * 2 + (4).to_bytes(4, "big"),
    }
    paths = {}
    for i, (what, data) in enumerate(cases.items()):
        paths[what] = tmp_path / f"case{i}-idx3-ubyte"
        paths[what].write_bytes(data)
    gz = gzip.compress(good)
    paths["truncated gz"] = tmp_path / "trunc-idx3-ubyte.gz"
    paths["truncated gz"].write_bytes(gz[: len(gz) // 2])
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0xFF
    paths["corrupt gz"] = tmp_path / "flip-idx3-ubyte.gz"
    paths["corrupt gz"].write_bytes(bytes(flipped))
    paths["gz name, raw content"] = tmp_path / "notgz-idx3-ubyte.gz"
    paths["gz name, raw content"].write_bytes(good)
    return paths


CORRUPT = [
    "wrong magic", "bad type code", "truncated raw", "trailing bytes", "dims mismatch", "truncated header",
    "empty", "dims overflow int64", "truncated gz", "corrupt gz", "gz name, raw content",
]


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_file_raises_data_error_naming_the_file(tmp_path: Path, case: str) -> None:
    path = _corrupt_cases(tmp_path)[case]
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert "download" in message  # says how to fix it


def test_missing_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope-idx1-ubyte"):
        read_idx(tmp_path / "nope-idx1-ubyte")


# ------------------------------------------------------ consistency of a catalog dataset's four files


def _write_mnist(folder: Path, train_x, train_y, test_x, test_y, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", train_x)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", train_y)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", test_x)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", test_y)


def _arrays(n_train: int = 20, n_test: int = 10):
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), (np.arange(n_train) % 10).astype(np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), (np.arange(n_test) % 10).astype(np.uint8),
    )


def test_image_label_count_mismatch_names_both_files(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = _arrays()
    _write_mnist(tmp_path / "mnist", train_x, train_y[:-1], test_x, test_y)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", str(tmp_path))
    assert "train-images-idx3-ubyte.gz" in str(info.value) and "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "20 images" in str(info.value) and "19 labels" in str(info.value)


def test_label_out_of_range_names_the_file(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = _arrays()
    test_y = test_y.copy()
    test_y[3] = 10
    _write_mnist(tmp_path / "mnist", train_x, train_y, test_x, test_y)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz contains label 10"):
        load_dataset("mnist", str(tmp_path))


def test_images_with_wrong_shape_are_rejected(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = _arrays()
    _write_mnist(tmp_path / "mnist", train_x.reshape(20, 784), train_y, test_x, test_y)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz holds"):
        load_dataset("mnist", str(tmp_path))


def test_corrupt_gz_in_dataset_names_the_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist", *_arrays())
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is not a valid IDX file: the gzip stream"):
        load_dataset("mnist", str(tmp_path))


def test_uncompressed_files_load_too(tmp_path: Path) -> None:
    arrays = _arrays()
    _write_mnist(tmp_path / "mnist", *arrays, gz=False)
    with pytest.warns(UserWarning, match="not the official mnist files"):
        data = load_dataset("mnist", str(tmp_path))
    np.testing.assert_array_equal(data.train_images[:, 0].numpy(), arrays[0])
    np.testing.assert_array_equal(data.test_labels.numpy(), arrays[3])
