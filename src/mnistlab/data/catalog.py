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


@dataclass(frozen=True)
class ArchiveSpec:
    """A named dataset published as one tar.gz archive of binary record files (CIFAR's binary version).

    Each record is `label_bytes` label bytes, then channels x side x side pixel bytes (the red
    plane, then green, then blue, each row by row). Only the binary version is used: the
    "python version" is pickles, and loading a pickle runs code.

    Attributes:
        name: the catalog name, also the folder under the data root ("cifar10").
        archive: the archive's file name, as the mirrors serve it.
        md5: the archive's md5 as the dataset's official page publishes it.
        archive_bytes: the official archive's size (a download announcing more is refused).
        mirrors: base URLs, tried in order.
        folder: the folder inside the archive that holds the files (kept under <root>/<name>/).
        train_files, test_files: record files, with the number of records each holds.
        label_sets: "fine"/"coarse" -> (byte of the record holding the label, the archive's file of
            class names one per line, the number of classes); the first is the default.
    """

    name: str
    archive: str
    md5: str
    archive_bytes: int
    mirrors: tuple[str, ...]
    folder: str
    train_files: tuple[tuple[str, int], ...]
    test_files: tuple[tuple[str, int], ...]
    label_bytes: int
    label_sets: dict[str, tuple[int, str, int]]
    channels: int = 3
    side: int = 32

    @property
    def record_bytes(self) -> int:
        """Bytes of one record: its labels and its pixels."""
        return self.label_bytes + self.channels * self.side * self.side

    @property
    def members(self) -> dict[str, int]:
        """Record files by archive member name -> the exact bytes each must hold (class-name files,
        `meta_members`, are capped at META_MAX_BYTES instead)."""
        return {f"{self.folder}/{name}": count * self.record_bytes for name, count in self.train_files + self.test_files}

    @property
    def meta_members(self) -> tuple[str, ...]:
        """The archive members naming the classes."""
        return tuple(dict.fromkeys(f"{self.folder}/{meta}" for _, meta, _ in self.label_sets.values()))

    @property
    def num_train(self) -> int:
        """Training records."""
        return sum(count for _, count in self.train_files)


META_MAX_BYTES = 64 * 1024  # a class-names file is a few hundred bytes

# The official page (https://www.cs.toronto.edu/~kriz/cifar.html) publishes an md5 per archive; these
# are its values for the binary versions, checked against independent copies of that table. No copy
# of the extracted files was at hand to take their sha256 from, so `data download` records the
# sha256 of each file it extracts from an archive whose md5 matched (SHA256SUMS in the dataset's
# folder), and every later load verifies the files against it.
ARCHIVES: dict[str, ArchiveSpec] = {
    "cifar10": ArchiveSpec(
        name="cifar10",
        archive="cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        archive_bytes=170_052_171,
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        folder="cifar-10-batches-bin",
        train_files=tuple((f"data_batch_{i}.bin", 10000) for i in range(1, 6)),
        test_files=(("test_batch.bin", 10000),),
        label_bytes=1,
        label_sets={"fine": (0, "batches.meta.txt", 10)},
    ),
    "cifar100": ArchiveSpec(
        name="cifar100",
        archive="cifar-100-binary.tar.gz",
        md5="03b5dce01913d631647c71ecec9e9cb8",
        archive_bytes=168_513_733,
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        folder="cifar-100-binary",
        train_files=(("train.bin", 50000),),
        test_files=(("test.bin", 10000),),
        label_bytes=2,  # coarse label, then fine label
        label_sets={"fine": (1, "fine_label_names.txt", 100), "coarse": (0, "coarse_label_names.txt", 20)},
    ),
}


def is_archive_dataset(name: str) -> bool:
    """Whether `name` is a catalog dataset published as an archive (cifar10, cifar100)."""
    return name in ARCHIVES


def catalog_names() -> list[str]:
    """Every catalog name: the IDX datasets, then the archives."""
    return [*DATASETS, *ARCHIVES]


def get_archive_spec(name: str) -> ArchiveSpec:
    """The archive entry for `name` (cifar10, cifar100); UsageError as get_dataset_spec for another name."""
    spec = ARCHIVES.get(name)
    if spec is None:
        get_dataset_spec(name)  # an unknown name: its message; an IDX name: not an archive
        raise UsageError(f"{name} is not published as an archive")
    return spec


def dataset_shape(name: str, labels: str | None = None) -> tuple[int, int, int] | None:
    """(channels, side, classes) of a catalog dataset from the catalog alone (with `labels`, of that label
    set; an unknown one: the default's); None for other names."""
    if name in ARCHIVES:
        spec = ARCHIVES[name]
        return spec.channels, spec.side, spec.label_sets.get(labels or "", next(iter(spec.label_sets.values())))[2]
    if name in DATASETS:
        return 1, IMAGE_SIDE, len(DATASETS[name].classes)
    return None


def get_dataset_spec(name: str) -> DatasetSpec:
    """The catalog entry for `name`; UsageError naming the close matches for an unknown name."""
    spec = DATASETS.get(name)
    if spec is not None:
        return spec
    candidates = catalog_names()
    close = difflib.get_close_matches(name.lower(), candidates, n=3, cutoff=0.5)
    normalised = name.strip().lower().replace("_", "-").replace(" ", "-")
    if normalised in candidates and normalised not in close:
        close.insert(0, normalised)
    if name in ARCHIVES:
        raise UsageError(f"{name} is an archive dataset, not IDX files (mnistlab.data.catalog.ARCHIVES)")
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
    return resolve_data_root(root) / (name if name in ARCHIVES else get_dataset_spec(name).name)


def find_file(folder: Path, gz_name: str) -> Path | None:
    """The file for `gz_name` in `folder`: the .gz or the uncompressed one, None if neither exists.

    The uncompressed file wins because it loads without decompression.
    """
    raw = folder / gz_name.removesuffix(".gz")
    if raw.is_file():
        return raw
    gz = folder / gz_name
    return gz if gz.is_file() else None
