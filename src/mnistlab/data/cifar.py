"""CIFAR-10 and CIFAR-100 read from the files of their official binary archives.

A record file is a run of fixed-size records: the label byte(s), then 3072 pixel bytes (the
1024 red, then green, then blue values of a 32x32 image, row by row), so the whole file is one
reshape away from uint8 [N, 3, 32, 32]. The class names come from the archive's own text files
(batches.meta.txt, fine_label_names.txt, coarse_label_names.txt). Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab.data.archive import download_archive, read_manifest, verify_archive_dataset
from mnistlab.data.catalog import ArchiveSpec, get_archive_spec
from mnistlab.data.memory import check_fits, image_bytes
from mnistlab.errors import DataError, UsageError


def _class_names(spec: ArchiveSpec, folder: Path, meta: str, count: int) -> list[str]:
    path = folder / spec.folder / meta
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the class names in {path}: {exc}; run `mnistlab data download "
                        f"--dataset {spec.name}` again") from None
    if len(names) != count:
        raise DataError(f"{path} names {len(names)} classes, not {spec.name}'s {count}: the file is damaged; "
                        f"run `mnistlab data download --dataset {spec.name}` again")
    return names


def _read_records(spec: ArchiveSpec, folder: Path, files: tuple[tuple[str, int], ...], label_byte: int,
                  classes: int, manifest: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 [N, 3, 32, 32], int64 [N], the files whose sha256 differs from SHA256SUMS) of record files."""
    total = sum(count for _, count in files)
    images = np.empty((total, spec.channels, spec.side, spec.side), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    changed: list[str] = []
    at = 0
    for name, count in files:
        member = f"{spec.folder}/{name}"
        path = folder / member
        raw = path.read_bytes()
        if len(raw) != count * spec.record_bytes:
            raise DataError(f"{path} holds {len(raw):,} bytes, not the {count * spec.record_bytes:,} of {count:,} "
                            f"records: the file is damaged; run `mnistlab data download --dataset {spec.name}`")
        if member in manifest and hashlib.sha256(raw).hexdigest() != manifest[member]:
            changed.append(member)
        records = np.frombuffer(raw, dtype=np.uint8).reshape(count, spec.record_bytes)
        images[at : at + count] = records[:, spec.label_bytes :].reshape(count, spec.channels, spec.side, spec.side)
        labels[at : at + count] = records[:, label_byte]
        at += count
    if total and int(labels.max()) >= classes:
        raise DataError(f"{folder / spec.folder} holds label {int(labels.max())}, outside 0..{classes - 1}: the "
                        f"files are damaged; run `mnistlab data download --dataset {spec.name}` again")
    return torch.from_numpy(images), torch.from_numpy(labels), changed


@dataclass
class ArchiveData:
    """The images, labels and class names read from an archive dataset's files."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    location: str
    changed: list[str]  # files whose sha256 differs from the one recorded at extraction
    label_set: str


def read_archive_dataset(name: str, root: Path, *, download: bool = False, labels: str | None = None) -> ArchiveData:
    """Archive dataset `name` from <root>/<name>/ (downloaded first if missing and `download`).

    Raises:
        DataError: missing files (saying how to get them), files of the wrong size, bad labels or names.
        UsageError: a label set the dataset does not have.
    """
    spec = get_archive_spec(name)
    label_set = labels or next(iter(spec.label_sets))
    if label_set not in spec.label_sets:
        raise UsageError(f"--labels {label_set} is for cifar100 (fine or coarse classes); {name} has one set of labels")
    folder = root / spec.name
    if download:
        download_archive(name, root)
    missing = [m for m, s in verify_archive_dataset(name, root, checksums=False).items() if s == "missing"]
    if missing:
        raise DataError(
            f"{spec.name} is missing {', '.join(missing)} in {folder}: run `mnistlab data download --dataset "
            f"{spec.name}` (with --data-dir {root} if that is not the default), or put {spec.archive} (the official "
            f"binary archive) in {folder} and run that command to check and extract it"
        )
    check_fits(image_bytes(spec.num_train + sum(c for _, c in spec.test_files), spec.channels, spec.side),
               f"{spec.name}'s images", "free some memory")
    label_byte, meta, count = spec.label_sets[label_set]
    classes = _class_names(spec, folder, meta, count)
    manifest = read_manifest(folder) or {}
    train_x, train_y, changed = _read_records(spec, folder, spec.train_files, label_byte, count, manifest)
    test_x, test_y, changed_test = _read_records(spec, folder, spec.test_files, label_byte, count, manifest)
    return ArchiveData(train_x, train_y, test_x, test_y, classes, str(folder), changed + changed_test, label_set)
