"""What `mnistlab predict` can read besides image files: CSV pixel rows, .npy/.npz arrays, IDX files,
and a run's own dataset split.

Each input becomes a source with `name`, `kind`, `has_labels`, `note` (what was assumed about
it, or None), `errors` and `batches(size, photo)`, which yields `mnistlab.predict.Batch`es: the
images of `size` rows at a time, with their labels when the input has them. Array-like inputs
(everything here) are MNIST-shaped already, so they keep their pixels (`photo=False`: only the
training normalisation follows); `photo=True` runs the MNIST-style preprocessing of photos on
each image. Raw pixels stay uint8 so that the model sees exactly what `mnistlab evaluate` feeds it.

Every input is checked when it is opened (shape, dtype, range, labels), before anything is
predicted; a CSV's rows are checked chunk by chunk as they stream in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.data.idx import is_idx_file, read_idx
from mnistlab.data.pixel_csv import iter_rows, open_pixel_csv
from mnistlab.errors import DataError, UsageError
from mnistlab.predict import Batch, ImageFiles, Predictor, expand_inputs, preprocess_array, quantize, to_grayscale

ARRAY_SUFFIXES = (".npy", ".npz")
_SCAN_ROWS = 8192  # images per chunk when an array's range is checked (bounded memory on a memory map)


def _photo_batch(images: np.ndarray, image_size: int) -> np.ndarray:
    """MNIST-style preprocessing of each gray image of a batch [n, 1, H, W] (`--preprocess photo`); colour
    images [n, 3, H, W] (a colour run's PIL images, already read as its image files are) are kept."""
    if images.shape[1] != 1:
        return images
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    return np.stack([quantize(preprocess_array(img[0], image_size)) for img in x]) if len(x) else \
        np.zeros((0, image_size, image_size), np.float32)


def _check_labels(name: str, labels: np.ndarray, classes: Sequence[str], where: Any) -> None:
    """Labels must be class indices the model knows; `where(i)` names the i-th label's place."""
    bad = np.nonzero((labels < 0) | (labels >= len(classes)))[0]
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{name}: {where(i)} has label {int(labels[i])}, but the model knows "
                        f"{len(classes)} classes (0..{len(classes) - 1}); fix the labels")


# --------------------------------------------------------------------------- CSV


class CsvInput:
    """A CSV of pixel rows (Kaggle's test.csv or train.csv), streamed `size` rows at a time."""

    kind = "csv"
    note: str | None = None

    def __init__(self, path: str, predictor: Predictor) -> None:
        self.name = path
        self.side = predictor.image_size
        self.classes = predictor.classes
        self.table = open_pixel_csv(path, pixels=self.side * self.side)
        self.has_labels = self.table.has_labels
        self.errors: list[str] = []

    def batches(self, size: int, photo: bool = False) -> Iterator[Batch]:
        """The rows as uint8 images [n, 1, H, W] (float after photo preprocessing), with their labels."""
        start = 0
        for rows in iter_rows(self.table, size):
            if rows.labels is not None:
                lines = rows.lines
                _check_labels(self.name, rows.labels, self.classes, lambda i, lines=lines: f"line {int(lines[i])}")
            images = rows.pixels.reshape(-1, 1, self.side, self.side)
            yield Batch(_photo_batch(images, self.side) if photo else images, rows.labels, start=start)
            start += len(rows)


# --------------------------------------------------------------------------- arrays (.npy, .npz, IDX, datasets)


def _as_nchw(name: str, images: np.ndarray, predictor: Predictor, photo: bool) -> np.ndarray:
    """[N, H, W], [N, C, H, W] or flat [N, H*W] -> a view [N, C, H, W], after checking the sizes."""
    size = predictor.image_size
    if images.ndim == 2 and images.shape[1] == size * size:
        images = images.reshape(len(images), 1, size, size)
    elif images.ndim == 3:
        images = images.reshape(images.shape[0], 1, *images.shape[1:])
    if images.ndim != 4:
        raise DataError(f"{name} holds an array of shape {list(images.shape)}; expected images [N, H, W] or "
                        f"[N, C, H, W] (or rows of {size * size} pixels [N, {size * size}])")
    channels = images.shape[1]
    if photo and channels == predictor.in_channels == 3 and tuple(images.shape[2:]) != (size, size):
        raise DataError(f"{name} holds colour {images.shape[2]}x{images.shape[3]} images; the model takes {size}x{size} "
                        "(colour arrays are not resized: pass PIL images or image files, which are)")
    if channels not in (1, predictor.in_channels) or (photo and channels != 1):
        need = "1 (photo preprocessing is for gray images)" if photo else " or ".join(dict.fromkeys(("1", str(predictor.in_channels))))
        raise DataError(f"{name} has {channels} channels (shape {list(images.shape)}); the model needs {need}")
    if not photo and tuple(images.shape[2:]) != (size, size):
        raise DataError(f"{name} holds {images.shape[2]}x{images.shape[3]} images; the model takes {size}x{size} "
                        "(arrays are not resized: pass --preprocess photo to scale and centre each one)")
    return images


def _value_range(name: str, images: np.ndarray) -> tuple[float, float]:
    """(min, max) over all images, in chunks; a DataError naming the first image with NaN or infinity."""
    lo, hi = np.inf, -np.inf
    for start in range(0, len(images), _SCAN_ROWS):
        chunk = np.asarray(images[start : start + _SCAN_ROWS])
        if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            bad = start + int(np.nonzero(~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1))[0][0])
            raise DataError(f"{name}: image {bad} holds NaN or infinite values; fix or remove it")
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    return lo, hi


def _first_outside(images: np.ndarray, top: float) -> int:
    """The index of the first image with a value outside [0, top]."""
    for start in range(0, len(images), _SCAN_ROWS):
        flat = np.asarray(images[start : start + _SCAN_ROWS]).reshape(-1, int(np.prod(images.shape[1:])))
        bad = np.nonzero(((flat < 0) | (flat > top)).any(axis=1))[0]
        if len(bad):
            return start + int(bad[0])
    return -1


def _scale(name: str, images: np.ndarray) -> tuple[float, str]:
    """(the value that is white, what was assumed): integers are 0-255, floats 0-1 (0-255 when any is above 1)."""
    kind = images.dtype.kind
    if kind not in "uif":
        raise DataError(f"{name} holds {images.dtype} values; expected numbers (uint8 0-255 or float 0-1)")
    lo, hi = _value_range(name, images) if images.size else (0.0, 0.0)
    if kind == "f" and 0.0 <= lo and hi <= 1.0:
        return 1.0, f"{images.dtype} values taken as 0-1 (largest {hi:g})"
    if lo < 0 or hi > 255.0:
        raise DataError(f"{name}: image {_first_outside(images, 255.0)} has a value outside 0..255 (the values "
                        f"span {lo:g}..{hi:g}; floats may be 0-1 or 0-255); fix or remove it")
    if kind == "f":
        return 255.0, f"{images.dtype} values above 1 (largest {hi:g}), taken as 0-255"
    return 255.0, f"{images.dtype} values taken as 0-255"


class ArrayInput:
    """Images in an array (a .npy memory map, an .npz member, an IDX file, a dataset split), sliced per batch."""

    kind = "array"

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray | None, predictor: Predictor,
                 photo: bool = False, kind: str = "array") -> None:
        self.name, self.kind, self.errors = name, kind, []
        self.image_size = predictor.image_size
        self.images = _as_nchw(name, images, predictor, photo)
        if not len(self.images):
            raise DataError(f"{name} holds no images (shape {list(self.images.shape)})")
        top, assumed = _scale(name, self.images)
        # Integer pixels become uint8 (normalised exactly as in training); float pixels float 0-1.
        self.divide = None if self.images.dtype.kind in "ui" else top
        # What was assumed about a file's values (a dataset split is the run's own uint8 data).
        shape = list(self.images.shape[1:])
        self.note = None if kind == "dataset" else f"{name}: {len(self.images):,} images {shape}, {assumed}"
        self.labels = _labels(name, labels, len(self.images), predictor.classes)
        self.has_labels = self.labels is not None

    def batches(self, size: int, photo: bool = False) -> Iterator[Batch]:
        """`size` images at a time (a memory-mapped file is read one batch at a time)."""
        for start in range(0, len(self.images), size):
            x = np.array(self.images[start : start + size])  # a copy: memory maps are read-only
            if self.divide is None:
                x = x.astype(np.uint8, copy=False)  # the range is checked: 0..255
            else:
                x = x.astype(np.float32) / np.float32(self.divide)
            y = None if self.labels is None else self.labels[start : start + size]
            yield Batch(_photo_batch(x, self.image_size) if photo else x, y, start=start)


def _labels(name: str, labels: np.ndarray | None, n: int, classes: Sequence[str]) -> np.ndarray | None:
    """Checked int64 labels [n], or None."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "ui" or len(labels) != n:
        raise DataError(f"{name}: the labels are {labels.dtype} of shape {list(labels.shape)}; expected {n} "
                        "integer labels, one per image")
    labels = labels.astype(np.int64)
    _check_labels(name, labels, classes, lambda i: f"label {i}")
    return labels


def _load_npy(path: Path) -> np.ndarray:
    try:
        # A memory map: a large file is read batch by batch, never whole.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npy array: {str(exc)[:160]}") from None


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise DataError(f"cannot read {path} as an .npz archive: {str(exc)[:160]}") from None
    except Exception as exc:  # noqa: BLE001 - zipfile raises its own types for a damaged archive
        raise DataError(f"cannot read {path} as an .npz archive: {type(exc).__name__}: {str(exc)[:120]}") from None


def _label_key(image_key: str, arrays: dict[str, np.ndarray]) -> str | None:
    """The labels beside an .npz's images: the partner by name (x_test -> y_test, images -> labels),
    else the only 1-D integer array of the same length."""
    n = len(arrays[image_key])
    fits = [k for k, a in arrays.items() if a.ndim == 1 and a.dtype.kind in "ui" and len(a) == n]
    partners = {image_key.replace("images", "labels"), image_key.replace("x", "y", 1), image_key.replace("X", "y", 1)}
    named = [k for k in fits if k in partners and k != image_key]
    return named[0] if named else (fits[0] if len(fits) == 1 else None)


def _npz_input(path: Path, key: str | None, predictor: Predictor, photo: bool) -> ArrayInput:
    arrays = _npz_arrays(path)
    images = [k for k, a in arrays.items() if a.ndim >= 2]
    if key is not None and key not in arrays:
        raise DataError(f"{path} has no array {key!r}; it holds {', '.join(arrays) or 'nothing'}")
    if key is None and len(images) != 1:
        listed = ", ".join(f"{k} {list(arrays[k].shape)}" for k in arrays) or "no arrays"
        raise DataError(f"{path} holds {listed}: name the images as {path}:KEY" if images else
                        f"{path} holds {listed}, no image array")
    key = key or images[0]
    label_key = _label_key(key, arrays)
    return ArrayInput(f"{path}:{key}" if len(arrays) > 1 else str(path), arrays[key],
                      arrays[label_key] if label_key else None, predictor, photo)


def _idx_labels_path(path: Path) -> Path | None:
    """The labels file beside an IDX images file (train-images-idx3-ubyte -> train-labels-idx1-ubyte[.gz])."""
    name = path.name.replace("images", "labels").replace("idx3", "idx1")
    if name == path.name:
        return None
    stem = name.removesuffix(".gz")
    for candidate in (path.with_name(stem), path.with_name(stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _idx_input(path: Path, predictor: Predictor, photo: bool) -> ArrayInput:
    images = read_idx(path)
    labels_path = _idx_labels_path(path)
    labels = read_idx(labels_path) if labels_path else None
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
                        "they do not belong together")
    return ArrayInput(str(path), images, labels, predictor, photo, kind="idx")


# --------------------------------------------------------------------------- a run's dataset


def dataset_input(predictor: Predictor, name: str, split: str, data_dir: str | None = None) -> ArrayInput:
    """The images and labels of `split` of dataset `name`, recreated as `mnistlab evaluate` recreates them."""
    from mnistlab.data.recreate import run_dataset, split_images

    if split not in ("test", "valid", "train"):
        raise UsageError(f"bad split {split!r}: choose test, valid or train")
    data = run_dataset(predictor.config, predictor.classes, data_dir, name=name, shape=predictor.data_spec)
    images, labels = split_images(data, predictor.config, split)
    return ArrayInput(f"{name}:{split}", images.numpy(), labels.numpy(), predictor, kind="dataset")


# --------------------------------------------------------------------------- every input


def _split_key(item: str) -> tuple[Path, str | None]:
    """`FILE.npz:KEY` -> (FILE.npz, KEY) when FILE.npz exists and the whole name does not."""
    path = Path(item)
    if not path.exists() and ".npz:" in item:
        head, key = item.rsplit(":", 1)
        if Path(head).is_file():
            return Path(head), key
    return path, None


def open_input(item: str, predictor: Predictor, photo: bool = False) -> Any:
    """One INPUT argument as a source (None for image files and folders, which `open_inputs` groups)."""
    path, key = _split_key(item)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CsvInput(item, predictor)
    if suffix == ".npz":
        return _npz_input(path, key, predictor, photo)
    if suffix == ".npy":
        return ArrayInput(item, _load_npy(path), None, predictor, photo)
    if path.is_file() and is_idx_file(path, ndims=(3, 4)):
        return _idx_input(path, predictor, photo)
    return None


def open_inputs(items: Sequence[str], predictor: Predictor, *, photo_arrays: bool = False,
                dataset: str | None = None, split: str = "test", data_dir: str | None = None) -> list[Any]:
    """Every INPUT as a source, in order (neighbouring image files and folders share one), then the dataset split.

    Raises:
        UsageError: no input at all, an empty name.
        DataError: an input that cannot be used (see each kind).
    """
    sources: list[Any] = []
    for item in items:
        source = open_input(item, predictor, photo_arrays) if str(item) else None
        if source is not None:
            sources.append(source)
        elif sources and isinstance(sources[-1], ImageFiles):
            sources[-1].paths += expand_inputs([item])
        else:
            sources.append(ImageFiles(expand_inputs([item]), predictor.image_size, predictor.in_channels))
    if dataset:
        sources.append(dataset_input(predictor, dataset, split, data_dir))
    if not sources:
        raise UsageError("nothing to predict: give image files, folders, CSV, .npy/.npz or IDX files, "
                         "or --dataset NAME")
    return sources


# --------------------------------------------------------------------------- Python objects (Run.predict)


def _as_array(item: Any) -> np.ndarray | None:
    """A numpy view of an array or tensor (a PIL image as gray floats 0-1); None for anything else."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return to_grayscale(item)
    if hasattr(item, "detach") and hasattr(item, "numpy"):  # a torch tensor, on any device
        return item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        return item
    return None


def _object_source(item: Any, name: str, predictor: Predictor, preprocess: str) -> ArrayInput | None:
    """An array, tensor or PIL image as a source; a 2-D one is one image (or rows of pixels [N, H*W]), 3-D
    [N, H, W], 4-D [N, C, H, W]; a last axis of 3 is colour channels ([H, W, 3] as numpy gives a PIL
    image, [N, H, W, 3]); for a colour run a 3-D [3, H, W] is one image."""
    from PIL import Image

    if isinstance(item, Image.Image) and predictor.in_channels == 3:  # read as the run's image files are
        return ArrayInput(name, predictor.prepare(item)[None], None, predictor, photo=False)
    images = _as_array(item)
    if images is None:
        return None
    size = predictor.image_size
    if images.ndim == 2 and images.shape[1] != size * size:  # one image; [N, 784] are rows of pixels
        images = images[None]
    if images.ndim == 3 and images.shape[0] == 3 == predictor.in_channels and images.shape[-1] != 3:
        images = images[None]  # a colour run's [3, H, W] (torchvision's ToTensor) is one image, not 3 gray ones
    if images.ndim in (3, 4) and images.shape[-1] == 3 and images.shape[-3] not in (1, 3):
        images = np.moveaxis(images.reshape(-1, *images.shape[-3:]), -1, 1)  # [H, W, 3] / [N, H, W, 3]: channels last
    # Pictures (a PIL image, a canvas of another size) are preprocessed like image files under "auto";
    # arrays of the model's size keep their pixels, as `mnistlab predict` keeps an array's.
    picture = isinstance(item, Image.Image) or (images.ndim >= 3 and tuple(images.shape[-2:]) != (size, size))
    photo = preprocess == "photo" or (preprocess == "auto" and picture)
    return ArrayInput(name, images, None, predictor, photo=photo, kind="images" if picture else "array")


def object_sources(images: Any, predictor: Predictor, preprocess: str = "auto") -> list[Any]:
    """The sources of `Run.predict`'s input: a path (anything `mnistlab predict` reads: image files, folders,
    CSV, .npy/.npz, IDX), a PIL image, a numpy array or torch tensor of images, or a list of these.

    Raises:
        UsageError: an object of another kind, or nothing at all.
        DataError: an input that cannot be used (as for `mnistlab predict`).
    """
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    sources: list[Any] = []
    for i, item in enumerate(items):
        name = f"images[{i}]" if isinstance(images, (list, tuple)) else "images"
        if isinstance(item, (str, Path)):
            sources += open_inputs([str(item)], predictor, photo_arrays=preprocess == "photo")
            continue
        source = _object_source(item, name, predictor, preprocess)
        if source is None:
            raise UsageError(f"{name} is a {type(item).__name__}; predict takes image paths, PIL images, numpy "
                             "arrays or torch tensors (or a list of them)")
        sources.append(source)
    if not sources:
        raise UsageError("nothing to predict: the list of images is empty")
    return sources
