"""A made-up, learnable MNIST-shaped dataset: for tests, quick benchmarks and trying the tool offline.

It is written as the four standard IDX files, so everything downstream (loading,
training, evaluation) runs its real code path on it in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    from mnistlab.data.idx import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_fake_mnist(n_train, seed)
    test_x, test_y = make_fake_mnist(n_test, seed + 1)
    write_idx(folder / "train-images-idx3-ubyte.gz", train_x)
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", test_y)
    return folder
