"""Downloading catalog datasets from their mirrors, and verifying files on disk.

Every file is streamed to a temporary file in the target folder, verified (sha256 of the
decompressed content, or IDX structure and counts when no checksum is known), and only
then renamed to its final name, so the folder never holds a partial or unverified file.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnistlab.data.catalog import FILE_KEYS, IMAGE_SIDE, DatasetSpec, find_file, get_dataset_spec, is_archive_dataset
from mnistlab.data.fetch import MirrorFailed, dataset_folder, default_mirrors, fetch_url
from mnistlab.data.idx import IdxFormatError, check_idx
from mnistlab.errors import DataError
from mnistlab.tmpfiles import create_temp


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
        For cifar10/cifar100, see `mnistlab.data.archive.verify_archive_dataset` (keys are the
        archive's file names; "unverified" for files extracted by hand).
    """
    if is_archive_dataset(name):
        from mnistlab.data.archive import verify_archive_dataset

        return verify_archive_dataset(name, root)
    spec = get_dataset_spec(name)
    folder = Path(root) / spec.name
    result: dict[str, str] = {}
    for key in FILE_KEYS:
        path = find_file(folder, spec.files[key][0])
        result[key] = "missing" if path is None else check_file(spec, key, path)
    return result


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
                fetch_url(url, tmp, timeout=timeout, progress=progress, max_bytes=max_download_bytes(spec, key))
                status = check_file(spec, key, tmp)
                if status != "ok":
                    raise MirrorFailed(f"downloaded file is {status}")
            except MirrorFailed as e:
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
    if is_archive_dataset(name):  # cifar10, cifar100: one archive, md5-checked and extracted safely
        from mnistlab.data.archive import download_archive

        return download_archive(name, root, mirrors=mirrors, timeout=timeout, progress=progress)
    spec = get_dataset_spec(name)
    folder = dataset_folder(root, spec.name)
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
