"""Made-up, learnable datasets: for tests, quick benchmarks and trying the tool offline.

`write_fake_mnist` writes an MNIST-shaped one as the four standard IDX files, so everything
downstream (loading, training, evaluation) runs its real code path on it in a fraction of a
second. `write_colour_folder` writes a colour one as a folder of PNG files (`folder:PATH`),
whose classes need the colour to be told apart.
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


# ---------------------------------------------------------------- a made colour dataset

#: The classes of `make_fake_colour`: a shape in a colour. Each image's brightness is random, so
#: a gray copy of the set cannot tell the colours apart: the classes need the three channels.
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta")
SHAPES = ("square", "ring")
COLOUR_CLASSES = tuple(f"{colour}-{shape}" for shape in SHAPES for colour in COLOUR_NAMES)
_RGB = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1)], dtype=np.float32)


def make_fake_colour(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 3, size, size], labels uint8 [n]) of COLOUR_CLASSES: a filled square or a
    ring of one colour, of random size, place and brightness, on coloured noise. Balanced classes
    in random order."""
    rng = np.random.default_rng(seed)
    k = len(COLOUR_CLASSES)
    labels = rng.permutation(np.arange(n) % k).astype(np.uint8)
    images = rng.integers(0, 70, size=(n, 3, size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for i, label in enumerate(labels):
        shape, colour = divmod(int(label), len(COLOUR_NAMES))
        r = rng.uniform(0.18, 0.3) * size
        cy, cx = rng.uniform(r, size - r, 2)
        dist = np.maximum(np.abs(yy - cy), np.abs(xx - cx)) if shape == 0 else np.hypot(yy - cy, xx - cx)
        mask = dist <= r if shape == 0 else (dist <= r) & (dist >= 0.55 * r)
        brightness = rng.uniform(120, 255)
        images[i][:, mask] = (_RGB[colour][:, None] * brightness + rng.uniform(0, 40, (3, 1)))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_colour_folder(folder: str | Path, n_train: int = 500, n_test: int = 200, seed: int = 0,
                        size: int = 32) -> Path:
    """Write `make_fake_colour` images as PNG files in folder/train/<class>/ and folder/test/<class>/.

    Every fifth image is written 1.5x as wide (stretched), so reading the folder exercises the
    resize that keeps the aspect ratio. The same arguments always write the same files.
    """
    from PIL import Image

    root = Path(folder)
    for split, count, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = make_fake_colour(count, split_seed, size)
        for name in COLOUR_CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            picture = Image.fromarray(image.transpose(1, 2, 0), mode="RGB")
            if i % 5 == 4:
                picture = picture.resize((size * 3 // 2, size), Image.Resampling.BILINEAR)
            picture.save(root / split / COLOUR_CLASSES[int(label)] / f"{i:05d}.png")
    return root
