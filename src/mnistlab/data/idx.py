"""Reading and writing IDX files (the MNIST file format), gzipped or raw.

IDX layout: two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the values in C order (big-endian for multi-byte types).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
_READ_CHUNK = 1 << 20  # bytes read from the file at a time
_OUT_CHUNK = 8 << 20  # decompressed bytes produced at a time: bounds memory whatever the gzip ratio


class IdxFormatError(DataError):
    """A file that is not a valid IDX file. `reason` is the short cause, without the file name."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"{path} is not a valid IDX file: {reason}; delete it and download it again "
            "(`mnistlab data download --dataset NAME`) or replace it with a good copy"
        )


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; check the path or download the dataset") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check its permissions") from None


def _read(path: Path, fh: BinaryIO) -> bytes:
    try:
        return fh.read(_READ_CHUNK)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check the disk") from None


def _gunzip(path: Path, fh: BinaryIO, pending: bytes) -> Iterator[bytes]:
    """The gzip members of `fh` decompressed, in chunks of at most _OUT_CHUNK bytes.

    zlib checks each member's CRC and length trailer, so truncation and bit rot are caught here.
    Bounding each output chunk bounds memory whatever the compression ratio (a gzip bomb).
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    at_end = False
    try:
        while True:
            if not pending and not at_end:
                pending = _read(path, fh)
                at_end = not pending
            out = inflater.decompress(pending, _OUT_CHUNK)
            pending = inflater.unconsumed_tail
            if out:
                yield out
            if inflater.eof:
                # Another member may follow (concatenated .gz files), after optional zero padding.
                # unused_data holds all the input after this member (unconsumed_tail may repeat it).
                pending = inflater.unused_data.lstrip(b"\0")
                while not pending and not at_end:
                    chunk = _read(path, fh)
                    at_end = not chunk
                    pending = chunk.lstrip(b"\0")
                if not pending:
                    return
                inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            elif at_end and not out and not pending:
                raise IdxFormatError(path, "the gzip stream is truncated (incomplete download?)")
    except zlib.error as e:
        raise IdxFormatError(path, f"corrupt gzip data ({e})") from None


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's content in chunks, gunzipped when it starts with the gzip magic (whatever its name)."""
    with _open(path) as fh:
        head = _read(path, fh)
        if len(head) == 1:
            head += _read(path, fh)  # the magic needs two bytes
        if head[:2] == _GZIP_MAGIC:
            yield from _gunzip(path, fh, head)
            return
        if path.suffix == ".gz":
            raise IdxFormatError(path, "the name ends in .gz but the content is not gzip")
        while head:
            yield head
            head = _read(path, fh)


@dataclass(frozen=True)
class _Header:
    dtype: np.dtype
    dims: tuple[int, ...]
    size: int  # header bytes
    total: int  # header + data bytes the dimensions need


def _parse_header(path: Path, data: bytes | bytearray, final: bool) -> _Header | None:
    """The header at the start of `data`; None when more bytes are needed (and `final` is false)."""
    if len(data) < 4:
        if final:
            raise IdxFormatError(path, f"only {len(data)} bytes, too short for the IDX header")
        return None
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise IdxFormatError(path, f"bad magic number 0x{bytes(data[:4]).hex()} (expected 0x0000 08 ndim)")
    ndim = data[3]
    if ndim == 0:
        raise IdxFormatError(path, "the header declares 0 dimensions")
    size = 4 + 4 * ndim
    if len(data) < size:
        if final:
            raise IdxFormatError(path, f"truncated header ({len(data)} bytes, {ndim} dimensions need {size})")
        return None
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[data[2]]
    # Python ints: a product of crafted dimensions cannot overflow into a size that looks right.
    return _Header(dtype, dims, size, size + math.prod(dims) * dtype.itemsize)


def _stream(path: Path, keep: bool, max_bytes: int | None) -> tuple[_Header, str, bytearray]:
    """Decompress, hash and check `path` chunk by chunk: (header, sha256 of the content, content).

    The content is kept only with `keep` (else an empty bytearray: memory stays at one chunk).
    Reading stops as soon as the content outgrows what its header declares, and a header
    declaring more than `max_bytes` is refused before anything more is read.
    """
    sha = hashlib.sha256()
    buf = bytearray()
    header: _Header | None = None
    seen = 0
    with contextlib.closing(_chunks(path)) as chunks:  # closes the file at once when a check fails
        for chunk in chunks:
            sha.update(chunk)
            seen += len(chunk)
            if keep or header is None:
                buf += chunk
            if header is None:
                header = _parse_header(path, buf, final=False)
                if header is not None:
                    _check_size(path, header, max_bytes)
                    if not keep:
                        buf = bytearray()
            if header is not None and seen > header.total:
                raise IdxFormatError(path, f"has trailing bytes: {_needs(header)}, the file has more")
    if header is None:
        header = _parse_header(path, buf, final=True)
        assert header is not None  # final=True raises instead
        _check_size(path, header, max_bytes)
    if seen < header.total:
        raise IdxFormatError(path, f"truncated: {_needs(header)}, the file has {seen}")
    return header, sha.hexdigest(), buf


def _needs(header: _Header) -> str:
    return f"dimensions {'x'.join(map(str, header.dims))} need {header.total} bytes"


def _check_size(path: Path, header: _Header, max_bytes: int | None) -> None:
    if max_bytes is not None and header.total > max_bytes:
        raise IdxFormatError(path, f"{_needs(header)}, more than the {max_bytes} this file should have")


def check_idx(path: str | os.PathLike[str], max_bytes: int | None = None) -> tuple[np.dtype, tuple[int, ...], str]:
    """Verify an IDX file without holding it in memory: (dtype, dimensions, sha256 of the content).

    The file is decompressed in chunks while it is hashed, so memory stays at a few MB for any
    file. `max_bytes` caps the decompressed size (header included) the header may declare, so
    a gzip bomb is refused after one chunk.

    Raises:
        DataError (IdxFormatError): as read_idx, and for a header declaring more than `max_bytes`.
    """
    header, digest, _ = _stream(Path(path), keep=False, max_bytes=max_bytes)
    return header.dtype.newbyteorder("="), header.dims, digest


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
    header, digest, buf = _stream(path, keep=True, max_bytes=None)
    arr = np.frombuffer(buf, dtype=header.dtype, offset=header.size).reshape(header.dims)
    if header.dtype.itemsize > 1:
        # Native byte order for torch; the bytearray itself is writable, so single bytes need no copy.
        arr = arr.astype(header.dtype.newbyteorder("="))
    return arr, digest


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzipped (detected by content) or raw, as a numpy array.

    Raises:
        DataError (IdxFormatError): naming the file, for a missing or unreadable file,
            a bad magic number, a truncated or corrupt gzip stream, or a size that does
            not match the dimensions in the header.
    """
    return read_idx_with_digest(path)[0]


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
