"""Downloading catalog datasets from their mirrors, and verifying files on disk.

Every file is streamed to a temporary file in the target folder, verified (sha256 of the
decompressed content, or IDX structure and counts when no checksum is known), and only
then renamed to its final name, so the folder never holds a partial or unverified file.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from mnistlab.data.catalog import FILE_KEYS, IMAGE_SIDE, DatasetSpec, find_file, get_dataset_spec
from mnistlab.data.idx import IdxFormatError, check_idx
from mnistlab.errors import DataError
from mnistlab.tmpfiles import create_temp

_CHUNK = 1 << 20
_USER_AGENT = "mnistlab (python urllib)"


class _MirrorFailed(Exception):
    """One mirror could not deliver one file; the message is what it said."""


def default_mirrors(spec: DatasetSpec) -> list[str]:
    """$MNISTLAB_MIRRORS (comma-separated base URLs) if set, else the catalog's mirrors."""
    env = os.environ.get("MNISTLAB_MIRRORS", "")
    mirrors = [m.strip() for m in env.split(",") if m.strip()]
    return mirrors or list(spec.mirrors)


def max_download_bytes(spec: DatasetSpec, key: str) -> int:
    """The most a .gz of the file of `key` can weigh: gzip never grows data by more than ~0.1%."""
    size = spec.file_size(key)
    return size + size // 1000 + (64 << 10)


def check_file(spec: DatasetSpec, key: str, path: Path) -> str:
    """"ok", "bad checksum" or "corrupt: REASON" for the file of `key` at `path`.

    Streamed: memory stays at a few MB, and a file decompressing to more than the catalog's
    size for it (spec.file_size) is refused after its first chunk.
    """
    try:
        dtype, dims, digest = check_idx(path, max_bytes=spec.file_size(key))
    except IdxFormatError as e:
        return f"corrupt: {e.reason}"
    except DataError as e:
        return f"corrupt: {e}"
    sha = spec.files[key][1]
    if sha is not None:
        return "ok" if digest == sha else "bad checksum"
    # No checksum known: the structure must at least be what the dataset promises.
    want_ndim = 3 if key.endswith("images") else 1
    if len(dims) != want_ndim:
        return f"corrupt: {len(dims)} dimensions, expected {want_ndim}"
    if dtype.itemsize != 1:
        return f"corrupt: values of type {dtype}, expected uint8"
    if dims[0] != spec.count(key):
        return f"corrupt: {dims[0]} items, expected {spec.count(key)}"
    if want_ndim == 3 and dims[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        return f"corrupt: images of {dims[1]}x{dims[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}"
    return "ok"


def verify_dataset(name: str, root: str | os.PathLike[str]) -> dict[str, str]:
    """Check the files of catalog dataset `name` under `root`/`name`/.

    Returns:
        file key -> "ok" | "missing" | "bad checksum" | "corrupt: REASON". For datasets with
        no known checksum, "ok" means a valid IDX file with the expected shape and count.
    """
    spec = get_dataset_spec(name)
    folder = Path(root) / spec.name
    result: dict[str, str] = {}
    for key in FILE_KEYS:
        path = find_file(folder, spec.files[key][0])
        result[key] = "missing" if path is None else check_file(spec, key, path)
    return result


def _fetch(url: str, dest: Path, *, timeout: float, progress: bool, max_bytes: int) -> None:
    """Stream `url` into the open-for-writing path `dest`; _MirrorFailed on anything but a whole file.

    More than `max_bytes` (announced or sent) is refused as soon as it shows.
    """
    from mnistlab.training.progress import progress_bar

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status = getattr(resp, "status", None)  # None for file:// URLs
            if status is not None and status != 200:
                raise _MirrorFailed(f"HTTP {status}")
            length_header = resp.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            if length is not None and length > max_bytes:
                raise _MirrorFailed(f"announces {length} bytes, more than the {max_bytes} this file can take")
            content_type = resp.headers.get("Content-Type", "") or ""
            received = 0
            with open(dest, "wb") as out, progress_bar(
                length, url.rsplit("/", 1)[-1], show=progress, unit="B", unit_scale=True, unit_divisor=1024,
            ) as bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    if received == 0 and chunk[:2] != b"\x1f\x8b":
                        # Captive portals and some mirrors answer 200 with an HTML page.
                        html = "html" in content_type or chunk.lstrip()[:1] == b"<"
                        kind = "an HTML page" if html else "data that is not gzip"
                        raise _MirrorFailed(f"returned {kind} (Content-Type {content_type or 'unknown'})")
                    try:
                        out.write(chunk)
                    except OSError as e:
                        # A local failure (disk full, quota): no other mirror can help, so stop here.
                        name = url.rsplit("/", 1)[-1]
                        raise DataError(
                            f"cannot write {dest.parent / name}: {e.strerror or e}; free some disk space "
                            "or choose another --data-dir"
                        ) from None
                    received += len(chunk)
                    if received > max_bytes:
                        raise _MirrorFailed(f"sent more than the {max_bytes} bytes this file can take")
                    bar.update(len(chunk))
            # http.client returns a short body without complaint when the connection drops.
            if length is not None and received < length:
                raise _MirrorFailed(f"transfer cut short ({received} of {length} bytes)")
            if received == 0:
                raise _MirrorFailed("empty response")
    except _MirrorFailed:
        raise
    except urllib.error.HTTPError as e:
        raise _MirrorFailed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _MirrorFailed(f"cannot connect ({e.reason})") from None
    except TimeoutError:
        raise _MirrorFailed(f"timed out after {timeout:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as e:
        raise _MirrorFailed(f"{type(e).__name__}: {e}") from None


def _download_file(spec: DatasetSpec, key: str, folder: Path, mirrors: list[str], *, timeout: float,
                   progress: bool) -> Path:
    gz_name, _ = spec.files[key]
    final = folder / gz_name
    failures: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + gz_name
        # A unique dot-name in the target folder: os.replace is then atomic (same filesystem)
        # and concurrent downloads of the same file cannot clobber each other. Not mkstemp: its
        # 0600 would make a shared data folder unreadable to other users; this follows the umask.
        fd, tmp = create_temp(folder, prefix=f".{gz_name}.", suffix=".part")
        os.close(fd)
        try:
            try:
                _fetch(url, tmp, timeout=timeout, progress=progress, max_bytes=max_download_bytes(spec, key))
                status = check_file(spec, key, tmp)
                if status != "ok":
                    raise _MirrorFailed(f"downloaded file is {status}")
            except _MirrorFailed as e:
                failures.append(f"{url}: {e}")
                continue
            os.replace(tmp, final)
            return final
        finally:
            # Reached on success (already renamed: no-op), failure and KeyboardInterrupt alike.
            tmp.unlink(missing_ok=True)
    tried = "; ".join(failures) if failures else "no mirrors configured"
    raise DataError(
        f"could not download {gz_name} for {spec.name} into {folder}: {tried}. "
        f"Check the network, set MNISTLAB_MIRRORS to working base URLs, or copy the file there yourself"
    )


def download_dataset(
    name: str,
    root: str | os.PathLike[str],
    *,
    mirrors: list[str] | None = None,
    timeout: float = 30,
    progress: bool = True,
) -> Path:
    """Download the files of catalog dataset `name` that are missing or bad into <root>/<name>/.

    Mirrors (default: $MNISTLAB_MIRRORS, comma-separated, else the catalog's) are tried in
    order for each file. A file already present and verifying is left alone; a present file
    that fails verification is replaced once a good copy has been downloaded.

    Returns:
        The dataset folder.

    Raises:
        DataError: a file could not be downloaded from any mirror (each mirror's answer listed).
        UsageError: unknown dataset name.
    """
    spec = get_dataset_spec(name)
    folder = Path(root).expanduser() / spec.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {folder}: {e.strerror or e}; choose another --data-dir") from None
    mirror_list = list(mirrors) if mirrors else default_mirrors(spec)
    for key in FILE_KEYS:
        existing = find_file(folder, spec.files[key][0])
        if existing is not None and check_file(spec, key, existing) == "ok":
            continue
        _download_file(spec, key, folder, mirror_list, timeout=timeout, progress=progress)
        if existing is not None and existing.suffix != ".gz":
            # The bad uncompressed copy would shadow the good .gz just downloaded.
            existing.unlink(missing_ok=True)
    return folder
