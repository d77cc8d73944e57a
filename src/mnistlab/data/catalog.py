"""The datasets mnistlab knows by name, and where their files live on disk."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from mnistlab.errors import UsageError

#: The four files of every MNIST-family dataset, in the order they are reported.
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_SIDE = 28  # image height and width of every catalog dataset


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its files, where to download them and how to normalise it.

    Attributes:
        name: the catalog name, also the folder under the data root ("mnist").
        files: file key ("train_images", ...) -> (official .gz file name, sha256 of the
            *decompressed* file or None). The sha256 is of the decompressed content because
            mirrors recompress archives (see the shared data README: same content, other md5).
            None means no checksum is known: only the IDX structure and the counts are verified.
        mirrors: base URLs, tried in order.
        classes: class names, index = label.
        mean, std: of the training images scaled to [0, 1] (one channel).
        num_train, num_test: image counts, checked when no checksum is known.
    """

    name: str
    files: dict[str, tuple[str, str | None]]
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    mean: float
    std: float
    num_train: int = 60000
    num_test: int = 10000

    @property
    def has_checksums(self) -> bool:
        """True when every file has a known sha256."""
        return all(sha is not None for _, sha in self.files.values())

    def count(self, key: str) -> int:
        """Images or labels in the file of `key` (num_train or num_test)."""
        return self.num_train if key.startswith("train") else self.num_test

    def file_size(self, key: str) -> int:
        """Decompressed bytes of the file of `key`: the IDX header, then one byte per label or pixel.

        Every dataset of the catalog holds 28x28 uint8 images and uint8 labels.
        """
        count = self.count(key)
        return 16 + count * IMAGE_SIDE * IMAGE_SIDE if key.endswith("images") else 8 + count


def _standard_files(sha: dict[str, str | None]) -> dict[str, tuple[str, str | None]]:
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    return {key: (names[key], sha.get(key)) for key in FILE_KEYS}


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        # sha256 of the decompressed official files (shared data README).
        files=_standard_files({
            "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        }),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        classes=tuple(str(i) for i in range(10)),
        # Computed from the official training set (population std).
        mean=0.1306604762738429,
        std=0.30810780385646264,
    ),
    # Fashion-MNIST publishes md5s of its .gz archives only. These are the sha256 of the
    # decompressed official files: `gunzip -c FILE.gz | sha256sum` on the archives whose md5 is
    # the published one (docs/reliability.md says how they were checked offline).
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files=_standard_files({
            "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        }),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        mean=0.2860,
        std=0.3530,
    ),
    # KMNIST publishes md5s of its .gz archives only, and no copy of the files was at hand to
    # compute the sha256 of their content: None, so downloads and `data info` check the IDX
    # structure and the 60000/10000 counts only (and say so).
    "kmnist": DatasetSpec(
        name="kmnist",
        files=_standard_files({}),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        mean=0.1918,
        std=0.3483,
    ),
}


def get_dataset_spec(name: str) -> DatasetSpec:
    """The catalog entry for `name`; UsageError naming the close matches for an unknown name."""
    spec = DATASETS.get(name)
    if spec is not None:
        return spec
    candidates = list(DATASETS)
    close = difflib.get_close_matches(name.lower(), candidates, n=3, cutoff=0.5)
    normalised = name.strip().lower().replace("_", "-").replace(" ", "-")
    if normalised in DATASETS and normalised not in close:
        close.insert(0, normalised)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(
        f"unknown dataset {name!r}: {hint}choose one of {', '.join(candidates)}, folder:PATH or csv:PATH"
    )


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: `data_dir` (--data-dir), else $MNISTLAB_DATA, else ~/.cache/mnistlab.

    The folder need not exist; dataset NAME lives in <root>/NAME/.
    """
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("MNISTLAB_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mnistlab"


def dataset_folder(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """<root>/<name>/ for a catalog name (no existence check)."""
    return resolve_data_root(root) / get_dataset_spec(name).name


def find_file(folder: Path, gz_name: str) -> Path | None:
    """The file for `gz_name` in `folder`: the .gz or the uncompressed one, None if neither exists.

    The uncompressed file wins because it loads without decompression.
    """
    raw = folder / gz_name.removesuffix(".gz")
    if raw.is_file():
        return raw
    gz = folder / gz_name
    return gz if gz.is_file() else None
