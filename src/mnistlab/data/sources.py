"""Loading a dataset by name: catalog datasets (IDX files), image folders and CSV files."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab.data.catalog import FILE_KEYS, find_file, get_dataset_spec, resolve_data_root
from mnistlab.data.idx import read_idx_with_digest
from mnistlab.data.images import ImageError, read_grayscale
from mnistlab.data.pixel_csv import read_pixel_csv
from mnistlab.data.split import split_indices
from mnistlab.errors import DataError

IMAGE_SIZE = 28
HOLDOUT_FRACTION = 0.2  # test share held out of folder and CSV datasets that have no test split
MAX_CSV_CLASSES = 1000  # CSV labels are class numbers 0..K-1; a larger one is a typo, not class 100000000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


class DataWarning(UserWarning):
    """Data that loads but is not what the catalog describes (e.g. files with other checksums)."""


@dataclass
class ImageData:
    """A loaded dataset: uint8 images [N, C, H, W] and int64 labels [N], train and test.

    `mean`/`std` are per channel, for the images scaled to [0, 1].
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    location: str

    @property
    def num_classes(self) -> int:
        """Number of classes (len(classes))."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Image channels (1 for the MNIST family)."""
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        """Image height (= width; 28 for the MNIST family)."""
        return int(self.train_images.shape[-1])


def load_dataset(name: str, data_dir: str | None = None, *, download: bool = False, seed: int = 0) -> ImageData:
    """Load a dataset into memory.

    Args:
        name: a catalog name ("mnist", "fashion-mnist", "kmnist"), read from <root>/<name>/
            (.gz or uncompressed IDX files with the standard names); "folder:PATH" (PATH/train/<class>/
            and PATH/test/<class>/, or PATH/<class>/ alone) of PNG/JPEG/BMP images, opened as `predict`
            opens them (mnistlab.data.images: EXIF orientation, 16-bit scaling, size limit) and
            converted to 28x28 grayscale; or "csv:PATH", rows `label,pixel0,...,pixel783` with an optional header.
            Folder and CSV data without a test split get a seeded 20% held out as test.
        data_dir: the data root for catalog names (default: $MNISTLAB_DATA, else ~/.cache/mnistlab).
        download: fetch missing catalog files instead of failing.
        seed: seeds the held-out test split of folder and CSV data.

    Raises:
        DataError: missing files (saying where to put them and how to download them), corrupt
            files, labels out of range, image/label count mismatches, unreadable images, bad CSV rows,
            folder or CSV data that gives an empty test split.
        UsageError: unknown dataset name.
    """
    if name.startswith("folder:"):
        return _load_folder(name, Path(name[len("folder:") :]).expanduser(), seed)
    if name.startswith("csv:"):
        return _load_csv(name, Path(name[len("csv:") :]).expanduser(), seed)
    return _load_catalog(name, data_dir, download)


# ---------------------------------------------------------------- catalog (IDX)


def _load_catalog(name: str, data_dir: str | None, download: bool) -> ImageData:
    spec = get_dataset_spec(name)
    root = resolve_data_root(data_dir)
    folder = root / spec.name
    paths = {key: find_file(folder, spec.files[key][0]) for key in FILE_KEYS}
    missing = [spec.files[key][0] for key, p in paths.items() if p is None]
    if missing:
        if not download:
            raise DataError(
                f"{spec.name} is missing {', '.join(missing)} in {folder}: run "
                f"`mnistlab data download --dataset {spec.name}` (with --data-dir {root} if that is not the default), "
                f"or copy the files there (.gz or uncompressed)"
            )
        from mnistlab.data.download import download_dataset

        download_dataset(spec.name, root)
        paths = {key: find_file(folder, spec.files[key][0]) for key in FILE_KEYS}

    # zlib and hashlib release the GIL: the four files decompress and hash in parallel.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(FILE_KEYS, pool.map(read_idx_with_digest, [paths[k] for k in FILE_KEYS])))
    arrays = {key: arr for key, (arr, _) in results.items()}
    mismatched = [
        paths[key].name for key, (_, digest) in results.items()
        if spec.files[key][1] is not None and digest != spec.files[key][1]
    ]
    train_x, train_y = _check_pair(arrays["train_images"], arrays["train_labels"],
                                   paths["train_images"], paths["train_labels"], len(spec.classes))
    test_x, test_y = _check_pair(arrays["test_images"], arrays["test_labels"],
                                 paths["test_images"], paths["test_labels"], len(spec.classes))
    if mismatched:
        # Not an error: the files are valid IDX with sane labels, just not the official release
        # (a modified or substitute dataset, or test fixtures). The catalog's mean/std describe
        # the official data only, so compute them from these images instead.
        warnings.warn(
            f"{', '.join(mismatched)} in {folder} are not the official {spec.name} files (sha256 differs); "
            f"using them anyway. Delete them and run `mnistlab data download --dataset {spec.name}` for the real data",
            DataWarning,
            stacklevel=3,
        )
        mean, std = mean_std(train_x)
    else:
        mean, std = (spec.mean,), (spec.std,)
    return ImageData(
        name=spec.name, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y,
        classes=list(spec.classes), mean=mean, std=std, location=str(folder),
    )


def _check_pair(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 1, H, W] and int64 [N] tensors, after checking shapes, counts and label range."""
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise DataError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}, expected uint8 [N, H, H] images; "
            "replace it with the dataset's image file"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise DataError(
            f"{labels_path} holds {labels.dtype} data of shape {labels.shape}, expected integer labels [N]; "
            "replace it with the dataset's label file"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            "the two files come from different datasets or one is damaged: download them again"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.max()) if int(labels.max()) >= num_classes else int(labels.min())
        raise DataError(
            f"{labels_path} contains label {bad}, outside 0..{num_classes - 1}; "
            "the file is damaged or from another dataset: download it again"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64, copy=False))


def mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images [N, C, H, W] scaled to [0, 1]."""
    if images.numel() == 0:
        return (0.0,) * images.shape[1], (1.0,) * images.shape[1]
    # A 256-bin histogram per channel: exact, and no float copy of the whole set.
    means, stds = [], []
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        total = hist.sum()
        m = float((hist * levels).sum() / total)
        var = float((hist * (levels - m) ** 2).sum() / total)
        means.append(m)
        stds.append(var**0.5 if var > 0 else 1.0)
    return tuple(means), tuple(stds)


def holdout(
    images: torch.Tensor, labels: torch.Tensor, seed: int, source: Path, unit: str, fix: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y) with a seeded, stratified 20% held out as test.

    Each class gives round(20%) of its `unit`s (images, rows), so classes of 1-2 give none; when
    that leaves no test split at all, a DataError naming `source` and `fix` (another way to get a
    test split) is raised here, at load time, before any run folder exists.
    """
    train_idx, test_idx = split_indices(labels, HOLDOUT_FRACTION, seed, stratify=True)
    if len(test_idx) == 0:
        largest = int(torch.bincount(labels).max())
        raise DataError(
            f"{source} has too few {unit}s to hold out a test split: {HOLDOUT_FRACTION:.0%} of each class is "
            f"held out (rounded) and its largest class has {largest}, while one test {unit} needs a class of "
            f"at least 3; {fix}"
        )
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


# ---------------------------------------------------------------- image folders


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _read_images(class_dirs: dict[str, Path], class_index: dict[str, int]) -> tuple[list[np.ndarray], list[int]]:
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    for cls, d in class_dirs.items():
        files = sorted(
            p for p in d.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        for path in files:
            try:
                # The loader `predict` uses: EXIF orientation, 16-bit scaling, size and format checks.
                pixels.append(read_grayscale(path, IMAGE_SIZE))
            except ImageError as e:
                raise DataError(f"cannot read image {e}; delete or replace the file") from None
            labels.append(class_index[cls])
    return pixels, labels


def _stack(pixels: list[np.ndarray], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    if not pixels:
        return torch.zeros(0, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    return torch.from_numpy(np.stack(pixels)).unsqueeze(1), torch.tensor(labels, dtype=torch.long)


def _load_folder(name: str, path: Path, seed: int) -> ImageData:
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; folder:PATH needs PATH/<class>/ or PATH/train/<class>/ of images")
    split_layout = (path / "train").is_dir()
    train_root = path / "train" if split_layout else path
    class_paths = _class_dirs(train_root)
    if not class_paths:
        raise DataError(f"{train_root} has no class folders; put the images in {train_root}/<class name>/")
    classes = [p.name for p in class_paths]
    index = {c: i for i, c in enumerate(classes)}
    pixels, labels = _read_images({p.name: p for p in class_paths}, index)
    if not pixels:
        raise DataError(
            f"no images (.png, .jpg, .jpeg, .bmp) in the class folders of {train_root}; add images to "
            f"{train_root}/<class name>/"
        )
    train_x, train_y = _stack(pixels, labels)
    test_root = path / "test"
    if split_layout and test_root.is_dir():
        test_paths = _class_dirs(test_root)
        unknown = [p.name for p in test_paths if p.name not in index]
        if unknown:
            raise DataError(
                f"{test_root} has class folders {', '.join(unknown)} that {train_root} lacks; "
                "the test classes must be a subset of the train classes"
            )
        # A class missing from test keeps its label index: labels always come from the train classes.
        test_x, test_y = _stack(*_read_images({p.name: p for p in test_paths}, index))
        if len(test_y) == 0:
            raise DataError(
                f"{test_root} holds no images (.png, .jpg, .jpeg, .bmp) in class folders: add test images to "
                f"{test_root}/<class name>/, or remove {test_root} to hold out {HOLDOUT_FRACTION:.0%} of "
                f"{train_root} as test"
            )
    else:
        train_x, train_y, test_x, test_y = holdout(
            train_x, train_y, seed, path, "image",
            f"add images, or put test images in {path}/test/<class name>/ (and train images in {path}/train/)",
        )
    mean, std = mean_std(train_x)
    return ImageData(
        name=name, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y,
        classes=classes, mean=mean, std=std, location=str(path.resolve()),
    )


# ---------------------------------------------------------------- CSV


def _load_csv(name: str, path: Path, seed: int) -> ImageData:
    # The chunked uint8 parser `mnistlab predict` uses too: bad rows are named by line.
    pixels, labels = read_pixel_csv(path)
    side = round(pixels.shape[1] ** 0.5)
    images = torch.from_numpy(pixels.reshape(-1, 1, side, side))
    y = torch.from_numpy(labels)
    classes = [str(i) for i in range(int(labels.max()) + 1)]
    train_x, train_y, test_x, test_y = holdout(images, y, seed, path, "row", "add rows")
    mean, std = mean_std(train_x)
    return ImageData(
        name=name, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y,
        classes=classes, mean=mean, std=std, location=str(path.resolve()),
    )
