"""Shared fixtures: a tiny learnable MNIST-shaped dataset, and the real MNIST when available."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The fake dataset sits where MNIST goes but is not the official files: loading it warns
# (DataWarning, "not the official ... files"). Expected here, so it is silenced for the suite;
# tests that check the warning use pytest.warns, which sees it regardless.
_FAKE_WARNING_FILTER = "ignore:.*are not the official .* files:UserWarning"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", _FAKE_WARNING_FILTER)


FAKE_TRAIN, FAKE_TEST, FAKE_CLASSES = 600, 200, 10


def make_fake_mnist(n: int, seed: int, num_classes: int = FAKE_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels uint8 [n]): class k is a bright 7x7 square at its own
    spot on a 4x3 grid, jittered by up to 2 px, on uniform noise. Balanced classes in random order.

    A linear model separates the classes almost perfectly within an epoch or two, so engine
    tests can assert "well above chance" quickly.
    """
    size = 28
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
    # Square centres spread over the image, one per class (up to 12).
    spots = [(row, col) for row in (5, 14, 23) for col in (4, 11, 17, 24)][:num_classes]
    centres = np.array(spots)[labels] + rng.integers(-2, 3, size=(n, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (np.abs(yy[None] - centres[:, 0, None, None]) <= 3) & (np.abs(xx[None] - centres[:, 1, None, None]) <= 3)
    images[mask] = rng.integers(180, 256, size=int(mask.sum()), dtype=np.uint8)
    return images, labels


def write_fake_mnist(folder: Path, n_train: int = FAKE_TRAIN, n_test: int = FAKE_TEST, seed: int = 0) -> Path:
    """Write the four MNIST files (gzipped IDX, standard names) of a fake dataset into `folder`."""
    from mnistlab.data import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_fake_mnist(n_train, seed)
    test_x, test_y = make_fake_mnist(n_test, seed + 1)
    write_idx(folder / "train-images-idx3-ubyte.gz", train_x)
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", test_y)
    return folder


@pytest.fixture
def fake_mnist_root(tmp_path: Path) -> Path:
    """A data root whose mnist/ holds a fake MNIST: 600 train / 200 test 28x28 images, 10 balanced
    classes of distinct jittered squares on noise (learnable above chance in one quick epoch).

    Use as `load_dataset("mnist", str(fake_mnist_root))` or `--data-dir ROOT --dataset mnist`.
    Loading warns (DataWarning) that the files are not the official ones; mean/std are then
    computed from these images.
    """
    root = tmp_path / "data"
    write_fake_mnist(root / "mnist")
    return root


@pytest.fixture
def real_data_root() -> Path:
    """The data root from $MNISTLAB_DATA holding the real MNIST in mnist/; skips the test otherwise."""
    env = os.environ.get("MNISTLAB_DATA", "").strip()
    if not env:
        pytest.skip("MNISTLAB_DATA is not set (e.g. MNISTLAB_DATA=/work/shared/data)")
    root = Path(env).expanduser()
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    missing = [n for n in names if not ((root / "mnist" / n).is_file() or (root / "mnist" / f"{n}.gz").is_file())]
    if missing:
        pytest.skip(f"MNISTLAB_DATA={root} lacks mnist/{', mnist/'.join(missing)}")
    return root
