"""The real MNIST (skipped unless $MNISTLAB_DATA points at a root with mnist/ in it)."""

from __future__ import annotations

from pathlib import Path

import torch

from mnistlab.data import DATASETS, download_dataset, load_dataset, verify_dataset

TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_real_mnist_counts_and_histogram(real_data_root: Path) -> None:
    data = load_dataset("mnist", str(real_data_root))
    assert data.train_images.shape == (60000, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert len(data.train_labels) == 60000 and len(data.test_labels) == 10000
    assert torch.bincount(data.train_labels, minlength=10).tolist() == TRAIN_HISTOGRAM
    assert data.classes == [str(i) for i in range(10)]
    # The catalog's statistics are the real ones.
    pixels = data.train_images.double().div_(255)
    assert abs(float(pixels.mean()) - data.mean[0]) < 1e-6
    assert abs(float(pixels.std()) - data.std[0]) < 1e-4


def test_real_mnist_checksums_verify(real_data_root: Path) -> None:
    assert verify_dataset("mnist", real_data_root) == {
        "train_images": "ok", "train_labels": "ok", "test_images": "ok", "test_labels": "ok"
    }


def test_download_from_a_local_mirror_accepts_the_recompressed_archive(real_data_root: Path, tmp_path: Path) -> None:
    # file:// mirror: the production path with the production checksums, offline. The shared
    # train-images archive was recompressed (other md5, same content): a sha256 of the
    # decompressed content must accept it.
    mirror = (real_data_root / "mnist").resolve().as_uri() + "/"
    folder = download_dataset("mnist", tmp_path, mirrors=[mirror], progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f for f, _ in DATASETS["mnist"].files.values())
    assert set(verify_dataset("mnist", tmp_path).values()) == {"ok"}
