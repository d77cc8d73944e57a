"""Opening image files safely: the one loader `predict`, `serve` and `folder:` datasets share.

`open_image` reads the header first (Pillow's `open` is lazy), refuses what it must before any
pixel is decoded (missing or empty files, formats other than PNG/JPEG/BMP/GIF, images over a
pixel limit: decompression bombs), then decodes and applies the EXIF orientation, so a phone
photo stored sideways with an Orientation tag is read upright. `to_grayscale` turns any mode
into float pixels in [0, 1] (16-bit scaled, transparency composited on white), `to_rgb` into uint8
RGB the same way. `read_image` is what `folder:` datasets and `predict` of a colour run use: one or
three channels, resized keeping the aspect ratio and centred on a black square.

Example:
    >>> x = read_grayscale("digits/3.png", size=28)      # doctest: +SKIP  (uint8 [28, 28])
    >>> y = read_image("photos/cat.jpg", channels=3, size=32)   # doctest: +SKIP  (uint8 [3, 32, 32])
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
    """An image file as uint8 [size, size] grayscale: `read_image` with one channel (aspect ratio kept,
    centred on black, as `folder:` datasets read it).

    Raises:
        ImageError: as `open_image`.
    """
    return read_image(source, 1, size)[0]


# Modes that hold no colour whatever their pixels are.
GRAY_MODES = ("1", "L", "LA", "La", "F", "I", "I;16", "I;16B", "I;16L", "I;16N")
# JPEG's rounding can leave a gray picture saved as RGB with channels a level or two apart.
COLOUR_TOLERANCE = 2


def to_rgb(img: Image.Image) -> np.ndarray:
    """Uint8 [H, W, 3]: transparency composited on white, palettes expanded, 16-bit gray scaled (as `to_grayscale`)."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        gray = np.round(to_grayscale(img) * 255.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def has_colour(img: Image.Image) -> bool:
    """Whether any pixel's red, green and blue differ by more than COLOUR_TOLERANCE levels of 255."""
    if img.mode in GRAY_MODES:
        return False
    rgb = to_rgb(img).astype(np.int16)
    spread = np.abs(rgb[:, :, 0] - rgb[:, :, 1]).max(initial=0), np.abs(rgb[:, :, 1] - rgb[:, :, 2]).max(initial=0)
    return bool(max(spread) > COLOUR_TOLERANCE)


def file_mode(path: str | Path) -> str | None:
    """The image's mode from its header alone (nothing decoded); None when it cannot be read (the
    decoding reader then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return str(img.mode)
    except Exception:  # noqa: BLE001 - any failure is reported by read_image with its reason
        return None


def fitted_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) of a width x height image scaled so that its longer side is `size` (aspect ratio kept)."""
    scale = size / max(width, height)
    return max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))


def _centre(pixels: np.ndarray, size: int) -> np.ndarray:
    """[h, w, ...] pasted into the centre of a black [size, size, ...] (the spare pixels split evenly)."""
    h, w = pixels.shape[:2]
    out = np.zeros((size, size, *pixels.shape[2:]), dtype=pixels.dtype)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = pixels
    return out


def square_image(img: Image.Image, channels: int, size: int) -> np.ndarray:
    """A decoded image as uint8 [channels, size, size]: 1 channel as `to_grayscale`, 3 as `to_rgb`;
    resized (LANCZOS) so that its longer side is `size`, keeping the aspect ratio, and centred on
    black (a non-square picture gets black bars, never a squashed copy)."""
    w, h = fitted_size(img.width, img.height, size)
    if channels == 1:
        x = to_grayscale(img)
        if x.shape != (h, w):
            x = np.asarray(Image.fromarray(x, mode="F").resize((w, h), Image.Resampling.LANCZOS))
        gray = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
        return _centre(gray, size)[None]
    rgb = to_rgb(img)
    if rgb.shape[:2] != (h, w):
        rgb = np.asarray(Image.fromarray(rgb, mode="RGB").resize((w, h), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(_centre(rgb, size).transpose(2, 0, 1))


def read_image(source: str | Path | bytes, channels: int, size: int, *, name: str | None = None) -> np.ndarray:
    """An image file (or its bytes) as uint8 [channels, size, size]: opened by `open_image`, then `square_image`.

    Raises:
        ImageError: as `open_image`.
    """
    return square_image(open_image(source, name), channels, size)
