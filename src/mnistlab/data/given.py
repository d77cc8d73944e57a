"""Data passed to `mnistlab.fit` as objects: a pair `(images, labels)` of tensors or arrays, or a
`torch.utils.data.Dataset` of `(image, label)` items (torchvision datasets included).

Images become what the rest of mnistlab works with: uint8 [N, C, H, W] (floats must be in [0, 1]
and are rounded to the 256 levels MNIST has; PIL images are read as they are). A Dataset is read
into memory once when it fits in the memory budget, else streamed item by item every epoch
(`StreamedImages`). Without a test split, a seeded, stratified 20% is held out, as for folder and
CSV datasets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from mnistlab.data.sources import ImageData, holdout, mean_std
from mnistlab.errors import UsageError

DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes of uint8 images read into memory; larger Datasets stream
MAX_CLASSES = 1000
STATS_SAMPLE = 10_000  # a streamed Dataset's mean/std are estimated from this many training images


def as_images(images: Any, what: str) -> torch.Tensor:
    """uint8 [N, C, H, W] from tensors/arrays [N, H, W] or [N, C, H, W] (uint8/ints 0..255, or floats in [0, 1])."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).detach().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise UsageError(f"{what}: images must be [N, H, W] or [N, C, H, W], got shape {list(x.shape)}")
    if x.shape[-1] != x.shape[-2]:
        raise UsageError(f"{what}: images must be square (H = W), got {x.shape[-2]}x{x.shape[-1]}")
    if len(x) == 0:
        raise UsageError(f"{what}: no images (an empty set)")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if x.dtype == torch.bool:
        return x.to(torch.uint8).mul_(255).contiguous()  # False/True as black/white
    if x.dtype.is_floating_point:
        if bool(torch.isnan(x).any()):
            raise UsageError(f"{what}: the images hold NaN values")
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            raise UsageError(
                f"{what}: float images must be in [0, 1] (these are {low:.3g} to {high:.3g}); pass them "
                "before any normalisation (mnistlab normalises them itself), or as uint8 0-255"
            )
        return (x * 255).round().to(torch.uint8).contiguous()
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
        raise UsageError(f"{what}: integer images must be 0..255, got {int(x.min())}..{int(x.max())}")
    return x.to(torch.uint8).contiguous()


def as_labels(labels: Any, n: int, what: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu()
    if y.dim() != 1 or len(y) != n:
        raise UsageError(f"{what}: expected {n} labels [N], got shape {list(y.shape)}")
    if y.dtype.is_floating_point and bool((y == y.round()).all()) and y.dtype != torch.bool:
        y = y.round()  # 3.0 is class 3; 3.7 is no class
    elif y.dtype.is_floating_point or y.dtype == torch.bool:
        raise UsageError(f"{what}: labels must be whole class numbers 0..K-1, got {y.dtype} values")
    y = y.long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= MAX_CLASSES):
        raise UsageError(f"{what}: labels must be class numbers 0..{MAX_CLASSES - 1}, got {int(y.min())}..{int(y.max())}")
    return y


def _item_image(image: Any) -> torch.Tensor:
    """One Dataset item's image as uint8 [C, H, W] (a tensor, an array, or a PIL image)."""
    from PIL import Image

    from mnistlab.data.images import has_colour, to_grayscale, to_rgb

    if isinstance(image, Image.Image):  # torchvision datasets without transforms yield these
        # The shared converters: 16-bit and float modes scaled, palettes and transparency handled.
        image = to_rgb(image).transpose(2, 0, 1) if has_colour(image) else to_grayscale(image)
    x = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
    return as_images(x.unsqueeze(0), "dataset item")[0]


def _item(dataset: Any, i: int) -> tuple[torch.Tensor, int]:
    item = dataset[i]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise UsageError(f"the Dataset's items must be (image, label) pairs; item {i} is a {type(item).__name__}")
    label = item[1]
    if isinstance(label, (torch.Tensor, np.ndarray)) and int(np.prod(label.shape)) == 1:
        label = label.item()  # tensor(4), np.array([4])
    if isinstance(label, bool) or not isinstance(label, (int, float, np.integer, np.floating)) or label != int(label):
        raise UsageError(f"the Dataset's item {i} has label {label!r}: labels must be whole class numbers 0..K-1")
    return _item_image(item[0]), int(label)


class StreamedImages:
    """A Dataset's images, read item by item when needed (uint8 [C, H, W] each): too large for memory.

    Indexing with a slice or indices gives another view; `load()` reads the view into a tensor.
    """

    def __init__(self, dataset: Any, indices: Sequence[int], shape: tuple[int, int, int]) -> None:
        self.dataset, self.indices, self.item_shape = dataset, list(indices), shape

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.indices), *self.item_shape)

    def __getitem__(self, index: Any) -> "StreamedImages":
        if isinstance(index, slice):
            return StreamedImages(self.dataset, self.indices[index], self.item_shape)
        picked = torch.as_tensor(index).reshape(-1).tolist()
        return StreamedImages(self.dataset, [self.indices[i] for i in picked], self.item_shape)

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """The images in order, `size` at a time, as uint8 tensors."""
        for start in range(0, len(self.indices), size):
            yield torch.stack([_item(self.dataset, i)[0] for i in self.indices[start:start + size]])

    def load(self) -> torch.Tensor:
        return torch.cat(list(self.chunks(1024))) if self.indices else torch.zeros((0, *self.item_shape), dtype=torch.uint8)


@dataclass
class GivenData:
    """What fit() trains on: the ImageData, its name for the run's records, and how it is held."""

    data: ImageData
    name: str  # "tensors" or "dataset:<class>", recorded as the run's dataset
    streamed: bool
    sha256: str | None  # of in-memory images and labels, so a resume can check it is given the same data


def given_data(data: Any, test: Any = None, *, seed: int = 0, memory_budget: int | None = None,
               show: bool = True) -> GivenData:
    """The ImageData of `data` (and `test`, else a held-out 20%), from a pair of tensors/arrays or a Dataset."""
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    if budget < 0:
        raise UsageError(f"memory_budget must be a number of bytes >= 0, got {memory_budget!r}")
    (train_x, train_y, classes), name = _read(data, "data", budget, show), _kind_name(data)
    if test is None:
        train_x, train_y, test_x, test_y = holdout(train_x, train_y, seed, "the data given to fit", "image",
                                                   "pass test=(images, labels)")
    else:
        test_x, test_y, _ = _read(test, "test", budget, show)
        if tuple(test_x.shape[1:]) != tuple(train_x.shape[1:]):
            raise UsageError(f"test images are {list(test_x.shape[1:])}, training images {list(train_x.shape[1:])}")
    streamed = isinstance(train_x, StreamedImages)
    mean, std = _stats(train_x, seed) if streamed else mean_std(train_x)
    classes = classes or [str(k) for k in range(int(max(int(train_y.max()), int(test_y.max()) if len(test_y) else 0)) + 1)]
    if len(train_y) and int(train_y.max()) >= len(classes):
        raise UsageError(f"labels go up to {int(train_y.max())} but the data names {len(classes)} classes")
    image_data = ImageData(name, train_x, train_y, test_x, test_y, list(classes), mean, std, "given to fit")
    return GivenData(image_data, name, streamed, None if streamed else _digest(image_data))


def _kind_name(data: Any) -> str:
    return "tensors" if isinstance(data, (tuple, list)) else f"dataset:{type(data).__name__}"


def _read(data: Any, what: str, budget: int, show: bool) -> tuple[Any, torch.Tensor, list[str] | None]:
    """(images, labels, class names or None) of a pair or a Dataset; a Dataset over the budget streams."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise UsageError(f"{what} as a pair: (images, labels), got {len(data)} items")
        images = as_images(data[0], what)
        return images, as_labels(data[1], len(images), what), None
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise UsageError(
            f"{what} must be a dataset name ('mnist', 'folder:PATH', 'csv:PATH'), a pair (images, labels) "
            f"or a torch Dataset of (image, label) items, not a {type(data).__name__}"
        )
    if len(data) == 0:
        raise UsageError(f"{what}: the Dataset is empty")
    first, first_label = _item(data, 0)
    names = [str(c) for c in getattr(data, "classes", [])] or None
    if len(data) * first.numel() > budget:
        return StreamedImages(data, range(len(data)), tuple(first.shape)), _labels_of(data, what, show), names
    images, labels = [first], [first_label]
    for i in _progress(range(1, len(data)), f"reading {type(data).__name__} into memory", show):
        x, y = _item(data, i)
        if x.shape != first.shape:
            raise UsageError(f"the Dataset's item {i} is an image of {list(x.shape)}, item 0 of {list(first.shape)}: "
                             "every image must have the same shape")
        images.append(x)
        labels.append(y)
    return torch.stack(images), as_labels(labels, len(labels), what), names


def _labels_of(data: Any, what: str, show: bool) -> torch.Tensor:
    """A streamed Dataset's labels: its `targets` (torchvision), else one pass over its items."""
    targets = getattr(data, "targets", None)
    if targets is not None and len(targets) == len(data):
        return as_labels(targets, len(data), what)
    return as_labels([_item(data, i)[1] for i in _progress(range(len(data)), "reading labels", show)], len(data), what)


def _progress(items: Any, desc: str, show: bool) -> Any:
    from mnistlab.training.progress import progress_bar

    return progress_bar(desc=desc, iterable=items, show=None if show else False)


def _stats(images: StreamedImages, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std of a streamed set, from a seeded sample of its images (exact ones would mean a whole pass)."""
    n = len(images)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:STATS_SAMPLE].sort().values
    return mean_std(images[pick].load())


def _digest(data: ImageData) -> str:
    h = hashlib.sha256()
    for t in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


class StreamBatches:
    """Training batches of a streamed Dataset through a DataLoader: the epoch's order is a pure function of
    (seed, epoch) as in BatchIterator, each batch read, then augmented (`augment`, an Augment: the draws
    BatchIterator makes, so streamed and resident images train alike) and normalised on the device."""

    def __init__(self, images: StreamedImages, labels: torch.Tensor, *, batch_size: int, mean: Any, std: Any,
                 seed: int, device: Any, channels_last: bool = False, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1, augment: Any = None) -> None:
        from mnistlab.data.loader import normalisation

        self.augment = augment
        self.images, self.labels, self.batch_size, self.seed = images, labels, int(batch_size), int(seed)
        self.device, self.channels_last, self.drop_last = torch.device(device), channels_last, drop_last
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        scale, shift = normalisation(mean, std, images.shape[1])
        self._scale, self._shift = scale.to(self.device, torch.float32), shift.to(self.device, torch.float32)

    @property
    def num_samples(self) -> int:
        return len(range(self.rank, len(self.images), self.world_size))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader

        from mnistlab.data.loader import augment_batch, augment_draws, epoch_generator

        gen = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(len(self.images), generator=gen)
        draws = None if self.augment is None else augment_draws(self.augment, len(self.images), gen, self.device)
        order = order[self.rank::self.world_size]
        self.epoch += 1
        loader = DataLoader(_Indexed(self.images, self.labels), batch_size=self.batch_size, sampler=order.tolist(),
                            drop_last=self.drop_last, num_workers=0)
        for i, (x, y) in enumerate(loader):
            x = x.to(self.device)
            if draws is not None:
                idx = order[i * self.batch_size:(i + 1) * self.batch_size].to(self.device)
                x = augment_batch(x, idx, self.augment, draws)
            x = x.float().mul_(self._scale).add_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, images: StreamedImages, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _item(self.images.dataset, self.images.indices[i])[0], self.labels[i]
