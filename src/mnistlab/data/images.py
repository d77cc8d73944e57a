"""Opening image files safely: the one loader `predict`, `serve` and `folder:` datasets share.

`open_image` reads the header first (Pillow's `open` is lazy), refuses what it must before any
pixel is decoded (missing or empty files, formats other than PNG/JPEG/BMP/GIF, images over a
pixel limit: decompression bombs), then decodes and applies the EXIF orientation, so a phone
photo stored sideways with an Orientation tag is read upright. `to_grayscale` turns any mode
into float pixels in [0, 1] (16-bit scaled, transparency composited on white).

Example:
    >>> x = read_grayscale("digits/3.png", size=28)      # doctest: +SKIP  (uint8 [28, 28])
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from mnistlab.errors import DataError

# Refuse absurd images before decoding them: a 20 MP limit is far above any digit photo.
MAX_PIXELS = 20_000_000
# PIL warns above MAX_IMAGE_PIXELS and raises above twice that; open_image also turns the
# warning into an error, so a decompression bomb is refused whichever check sees it first.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


class ImageError(DataError):
    """An input that is not a usable image (missing, empty, too large, unsupported format, corrupt)."""


def _too_large(label: str, max_pixels: int, size: tuple[int, int] | None = None) -> ImageError:
    dims = f"{size[0]}x{size[1]}, " if size else ""
    return ImageError(f"{label}: image is too large ({dims}over {max_pixels / 1_000_000:g} megapixels)")


def _checked_file(path: Path, label: str) -> Path:
    """The path, after refusing what is not a non-empty regular file (nothing is read yet)."""
    try:
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if not path.is_file():
            raise ImageError(f"{label}: not a file")
        if path.stat().st_size == 0:
            raise ImageError(f"{label}: empty file")
    except OSError as exc:
        raise ImageError(f"{label}: cannot read: {exc.strerror or exc}") from None
    return path


def _decode(fp: BinaryIO, label: str, max_pixels: int) -> Image.Image:
    """Read the header, check format and size, then decode the first frame and apply EXIF orientation."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(label, max_pixels) from None
        except Exception:  # noqa: BLE001 - PIL raises many types for garbage input
            raise ImageError(f"{label}: not an image (or an unsupported format; use PNG, JPEG, BMP or GIF)") from None
        if img.format not in ALLOWED_FORMATS:
            raise ImageError(f"{label}: {img.format} images are not supported; use PNG, JPEG, BMP or GIF")
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError(f"{label}: image has no pixels")
        if width * height > max_pixels:
            raise _too_large(label, max_pixels, img.size)
        try:
            img.seek(0)  # an animated GIF gives its first frame
            img.load()
            # The camera's Orientation tag: stored sideways, displayed upright (and so seen by people).
            ImageOps.exif_transpose(img, in_place=True)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(label, max_pixels) from None
        except Exception as exc:  # noqa: BLE001
            raise ImageError(f"{label}: corrupt or truncated image ({str(exc)[:80]})") from None
    return img


def open_image(source: str | Path | bytes, name: str | None = None, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image from a path or bytes, refusing anything unsafe or unsupported.

    A file is opened lazily: its size is checked from the header before any pixel is decoded,
    and a file that is not an image is refused after its first bytes. Only PNG, JPEG, BMP and
    GIF are accepted (the actual format, not the file name); an animated GIF gives its first
    frame; the EXIF orientation is applied.

    Args:
        source: a file path or the file's bytes.
        name: how error messages name the image (default: the path, or "image").
        max_pixels: refuse images with more pixels than this (at most MAX_PIXELS).

    Raises:
        ImageError: missing, empty, not an image, unsupported format, too large or corrupt.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    max_pixels = min(max_pixels, MAX_PIXELS)
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{label}: empty file")
        return _decode(io.BytesIO(source), label, max_pixels)
    path = _checked_file(Path(source), label)
    try:
        with open(path, "rb") as fp:
            return _decode(fp, label, max_pixels)
    except OSError as exc:
        raise ImageError(f"{label}: cannot read: {exc.strerror or exc}") from None


def to_grayscale(img: Image.Image) -> np.ndarray:
    """Float32 [H, W] in [0, 1]: transparency composited on white, palettes and 16-bit handled."""
    if img.mode == "P":
        # A palette may carry transparency; RGBA keeps it for the composite below.
        img = img.convert("RGBA")
    if img.mode in _SIXTEEN_BIT_MODES:
        # convert("L") would clip 16-bit values at 255, not scale them.
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if arr.max() > 255 else 255.0
        return np.clip(arr / top, 0.0, 1.0)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGB" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def read_grayscale(source: str | Path, size: int) -> np.ndarray:
    """An image file as uint8 [size, size] grayscale (opened by `open_image`, resized with LANCZOS).

    Raises:
        ImageError: as `open_image`.
    """
    x = to_grayscale(open_image(source))
    if x.shape != (size, size):
        x = np.asarray(Image.fromarray(x, mode="F").resize((size, size), Image.Resampling.LANCZOS))
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
