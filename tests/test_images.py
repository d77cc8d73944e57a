"""The one image loader (mnistlab.data.images) behind `predict`, `serve` and `folder:` datasets:
EXIF orientation, 16-bit scaling, the decompression-bomb guard, and header-first reading."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import png_header_only, save_sideways, seven
from mnistlab.data import load_dataset
from mnistlab.data.images import ImageError, open_image, to_grayscale
from mnistlab.errors import DataError

@pytest.mark.parametrize("fmt, tolerance", [("JPEG", 0.02), ("PNG", 0.0)])
def test_exif_orientation_is_applied(tmp_path: Path, fmt: str, tolerance: float) -> None:
    upright = seven()
    img = open_image(save_sideways(upright, tmp_path / f"photo.{fmt.lower()}", fmt))
    assert img.format == fmt and img.size == (upright.shape[1], upright.shape[0])
    x = to_grayscale(img)
    assert float(np.abs(x - upright / 255.0).mean()) <= tolerance


def test_folder_dataset_reads_sideways_photos_upright(tmp_path: Path) -> None:
    upright = seven()
    for split in ("train", "test"):
        (tmp_path / split / "seven").mkdir(parents=True)
    Image.fromarray(upright).save(tmp_path / "train" / "seven" / "upright.png")
    save_sideways(upright, tmp_path / "test" / "seven" / "phone.png", "PNG")
    data = load_dataset(f"folder:{tmp_path}")
    assert torch.equal(data.test_images[0], data.train_images[0])


def _digits(n: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = np.zeros((28, 28), np.uint8)
        a[5:23, 10 + i % 5 : 14 + i % 5] = rng.integers(60, 256)
        out.append(a)
    return out


def test_folder_16_bit_pngs_load_like_8_bit(tmp_path: Path) -> None:
    for bits in (8, 16):
        for i, a in enumerate(_digits()):
            folder = tmp_path / str(bits) / str(i % 2)
            folder.mkdir(parents=True, exist_ok=True)
            # The same pixels as 16-bit: v * 257 maps 0..255 onto 0..65535.
            img = Image.fromarray(a) if bits == 8 else Image.fromarray(a.astype(np.uint16) * 257)
            assert img.mode == ("L" if bits == 8 else "I;16")
            img.save(folder / f"{i}.png")
    eight, sixteen = (load_dataset(f"folder:{tmp_path / b}", seed=0) for b in ("8", "16"))
    assert torch.equal(sixteen.train_images, eight.train_images)
    assert torch.equal(sixteen.test_images, eight.test_images)
    assert sixteen.mean == pytest.approx(eight.mean)


@pytest.mark.parametrize("size", [(30000, 30000), (12000, 12000)])
def test_folder_dataset_refuses_decompression_bombs(tmp_path: Path, size: tuple[int, int]) -> None:
    for cls in "01":
        (tmp_path / cls).mkdir()
        Image.fromarray(seven(28, 28)).save(tmp_path / cls / "ok.png")
    bomb = tmp_path / "1" / "bomb.png"
    bomb.write_bytes(png_header_only(*size))
    with pytest.raises(ImageError) as from_predict:
        open_image(bomb)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused before PIL's warning
        with pytest.raises(DataError) as from_folder:
            load_dataset(f"folder:{tmp_path}")
    message = str(from_folder.value)
    assert "bomb.png" in message and "too large" in message and str(from_predict.value) in message


def test_a_huge_file_that_is_not_an_image_is_refused_from_its_header(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(512 * 1024 * 1024)  # sparse: 512 MB of zeros that take no disk
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="not an image"):
            open_image(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"read {peak / 2**20:.0f} MB to look at a header"
