"""Reading and writing IDX files (the MNIST file format), gzipped or raw.

IDX layout: two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the values in C order (big-endian for multi-byte types).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from mnistlab.errors import DataError

# IDX type code -> numpy dtype (big-endian, as the format stores them).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in _DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(DataError):
    """A file that is not a valid IDX file. `reason` is the short cause, without the file name."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"{path} is not a valid IDX file: {reason}; delete it and download it again "
            "(`mnistlab data download --dataset NAME`) or replace it with a good copy"
        )


def _decompressed_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; check the path or download the dataset") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check its permissions") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            # gzip.decompress checks the CRC and the length trailer, so truncation and bit rot are caught here.
            return gzip.decompress(data)
        except EOFError:
            raise IdxFormatError(path, "the gzip stream is truncated (incomplete download?)") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as e:
            raise IdxFormatError(path, f"corrupt gzip data ({e})") from None
    elif path.suffix == ".gz":
        raise IdxFormatError(path, "the name ends in .gz but the content is not gzip")
    return data


def _parse(path: Path, data: bytes) -> np.ndarray:
    if len(data) < 4:
        raise IdxFormatError(path, f"only {len(data)} bytes, too short for the IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise IdxFormatError(path, f"bad magic number 0x{data[:4].hex()} (expected 0x0000 08 ndim)")
    ndim = data[3]
    if ndim == 0:
        raise IdxFormatError(path, "the header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(path, f"truncated header ({len(data)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[data[2]]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxFormatError(
            path, f"{what}: dimensions {'x'.join(map(str, dims))} need {expected} bytes, the file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # A writable native-endian copy: torch.from_numpy refuses read-only buffers without a warning,
    # and the caller owns the result. One copy of 47 MB is ~10 ms.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def is_idx_file(path: str | os.PathLike[str], ndims: tuple[int, ...] = (1, 2, 3, 4)) -> bool:
    """Whether a file starts like an IDX file (gzipped or not) of one of `ndims` dimensions; reads 4 bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            if head[:2] == _GZIP_MAGIC:
                fh.seek(0)
                with gzip.open(fh) as gz:
                    head = gz.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(head) == 4 and head[:2] == b"\x00\x00" and head[2] in _DTYPES and head[3] in ndims


def read_idx_with_digest(path: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
    """Like read_idx, also returning the sha256 hex digest of the decompressed file.

    One decompression serves both the checksum and the array.
    """
    path = Path(path)
    data = _decompressed_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    return _parse(path, data), digest


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzipped (detected by content) or raw, as a numpy array.

    Raises:
        DataError (IdxFormatError): naming the file, for a missing or unreadable file,
            a bad magic number, a truncated or corrupt gzip stream, or a size that does
            not match the dimensions in the header.
    """
    path = Path(path)
    return _parse(path, _decompressed_bytes(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of `array` (uint8, int8, int16, int32, float32 or float64)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if native not in _CODES:
        raise TypeError(f"IDX cannot store dtype {array.dtype}; use uint8")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped when `path` ends with .gz.

    Written to a temporary name first and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        # mtime=0: the same array always gives the same bytes.
        data = gzip.compress(data, compresslevel=6, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
