"""Archive datasets (CIFAR's binary version): download, md5 check, safe extraction, recorded sha256.

`download_archive` gets `<archive>` from the mirrors in order (or takes the copy a user put in
the dataset's folder), checks its md5 against the official page's, and extracts only the files
the catalog names. Extraction refuses the whole archive when any member's name leaves the
target folder (`..`, an absolute path) or is a link or a device, and checks each file's size
against its record count. Files are written to a temporary folder beside the target and moved
into place only once every one of them is complete, so an interrupted or refused extraction
leaves nothing half-written. The sha256 of each extracted file goes into `SHA256SUMS`, which
every later load and `data info` verify.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from mnistlab.data.catalog import META_MAX_BYTES, ArchiveSpec, get_archive_spec
from mnistlab.data.fetch import MirrorFailed, dataset_folder, default_mirrors, fetch_url
from mnistlab.errors import DataError
from mnistlab.tmpfiles import create_temp

MANIFEST = "SHA256SUMS"
_CHUNK = 1 << 20


class UnsafeArchive(DataError):
    """An archive with a member that would be written outside its folder, or that is not a plain file."""


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, streamed."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, str] | None:
    """SHA256SUMS of a dataset folder as {relative path: sha256}; None when there is none."""
    path = folder / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}; delete it and run `mnistlab data download` again") from None
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            sums[name] = digest
    return sums


def check_member(member: tarfile.TarInfo, archive: str) -> PurePosixPath:
    """The member's path, after refusing one that is absolute, climbs out with `..`, or is not a
    regular file or folder (symbolic and hard links, devices, FIFOs)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts or "\\" in member.name:
        raise UnsafeArchive(f"{archive} has a member named {member.name!r}, outside the folder it is "
                            "extracted to; refusing the whole archive")
    if not (member.isreg() or member.isdir()):
        kind = "a link" if (member.issym() or member.islnk()) else "not a plain file"
        raise UnsafeArchive(f"{archive} has a member {member.name!r} that is {kind}; refusing the whole archive")
    return name


def _copy_member(source: BinaryIO, dest: Path, limit: int) -> str:
    """Stream a member into `dest` (at most `limit` bytes); its sha256."""
    h = hashlib.sha256()
    written = 0
    with open(dest, "wb") as out:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            written += len(chunk)
            if written > limit:
                raise DataError(f"{dest.name} in the archive is larger than the {limit:,} bytes it should hold")
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def extract_archive(spec: ArchiveSpec, archive: Path, staging: Path) -> dict[str, str]:
    """Extract the catalog's files of `archive` into `staging`; {member name: sha256}.

    Every member is checked (check_member), also those not extracted; each record file must hold
    exactly its records, and every file the catalog names must be there.
    """
    sizes = spec.members
    wanted = {**sizes, **dict.fromkeys(spec.meta_members, META_MAX_BYTES)}
    sums: dict[str, str] = {}
    try:
        # Streamed ("r|gz"): members are read in order, and no member's data is trusted before its header is.
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                name = str(check_member(member, spec.archive))
                if name not in wanted or not member.isreg():
                    continue
                if name in sizes and member.size != sizes[name]:
                    raise DataError(f"{name} in {spec.archive} holds {member.size:,} bytes, not the {sizes[name]:,} "
                                    f"of its {sizes[name] // spec.record_bytes:,} records: the archive is damaged")
                dest = staging / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - regular members always have data
                    continue
                sums[name] = _copy_member(source, dest, wanted[name])
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise DataError(f"cannot extract {archive}: {exc.strerror or exc}; free some disk space or "
                            "choose another --data-dir") from None
        raise DataError(f"{archive} is not a complete tar.gz archive ({exc}); download it again") from None
    missing = [name for name in wanted if name not in sums]
    if missing:
        raise DataError(f"{spec.archive} lacks {', '.join(missing)}: it is not the {spec.name} binary archive")
    return sums


def _install(spec: ArchiveSpec, staging: Path, folder: Path, sums: dict[str, str]) -> None:
    """Move the extracted files into `folder`, then write SHA256SUMS (last: it vouches for the files)."""
    from mnistlab.training.checkpoint import atomic_write_bytes

    for name in sums:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target)
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    atomic_write_bytes(folder / MANIFEST, lambda fh: fh.write(text.encode()))


def _download(spec: ArchiveSpec, folder: Path, mirrors: list[str], *, timeout: float, progress: bool) -> Path:
    """The archive fetched into a temporary file in `folder`, its md5 checked; mirrors tried in order."""
    failures: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + spec.archive
        fd, tmp = create_temp(folder, prefix=f".{spec.archive}.", suffix=".part")
        os.close(fd)
        try:
            fetch_url(url, tmp, timeout=timeout, progress=progress, max_bytes=spec.archive_bytes + (1 << 20))
            digest = file_digest(tmp, "md5")
            if digest != spec.md5:
                raise MirrorFailed(f"the archive's md5 is {digest}, not the official {spec.md5}")
            return tmp
        except MirrorFailed as e:
            failures.append(f"{url}: {e}")
            tmp.unlink(missing_ok=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    tried = "; ".join(failures) if failures else "no mirrors configured"
    raise DataError(
        f"could not download {spec.archive} for {spec.name} into {folder}: {tried}. Check the network, set "
        f"MNISTLAB_MIRRORS to working base URLs, or put {spec.archive} into {folder} yourself"
    )


def verify_archive_dataset(name: str, root: str | Path, *, checksums: bool = True) -> dict[str, str]:
    """Check the files of archive dataset `name` under <root>/<name>/.

    Returns:
        file (as named in the archive) -> "ok" (its sha256 is the one SHA256SUMS recorded when it was
        extracted from the archive with the official md5), "unverified" (right size, but no
        SHA256SUMS entry: extracted by hand; or `checksums` False: sizes only), "missing",
        "bad checksum" or "corrupt: REASON".
    """
    spec = get_archive_spec(name)
    folder = Path(root) / spec.name
    manifest = read_manifest(folder) or {}
    result: dict[str, str] = {}
    for member, size in {**spec.members, **dict.fromkeys(spec.meta_members)}.items():
        path = folder / member
        if not path.is_file():
            result[member] = "missing"
        elif size is not None and path.stat().st_size != size:
            result[member] = f"corrupt: {path.stat().st_size:,} bytes, expected {size:,}"
        elif member not in manifest or not checksums:
            result[member] = "unverified"
        else:
            result[member] = "ok" if file_digest(path) == manifest[member] else "bad checksum"
    return result


def download_archive(name: str, root: str | os.PathLike[str], *, mirrors: list[str] | None = None,
                     timeout: float = 30, progress: bool = True) -> Path:
    """Make <root>/<name>/ hold archive dataset `name`'s files, verified; returns the folder.

    Files already there that match SHA256SUMS, or that have the right sizes and no SHA256SUMS
    entry (extracted by hand), are left alone. Otherwise the archive comes from
    <root>/<name>/<archive> when a copy with the official md5 is there (kept), else from the mirrors
    ($MNISTLAB_MIRRORS, else the catalog's; the downloaded copy is deleted once extracted).

    Raises:
        DataError: no mirror delivered the archive with the official md5, the archive is damaged,
            unsafe (a member outside the folder, a link) or lacks a file.
    """
    spec = get_archive_spec(name)
    folder = dataset_folder(root, spec.name)
    if set(verify_archive_dataset(spec.name, folder.parent).values()) <= {"ok", "unverified"}:
        return folder
    local = folder / spec.archive
    downloaded = None
    if not (local.is_file() and file_digest(local, "md5") == spec.md5):
        downloaded = local = _download(spec, folder, list(mirrors) if mirrors else default_mirrors(spec),
                                       timeout=timeout, progress=progress)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder))
    try:
        _install(spec, staging, folder, extract_archive(spec, local, staging))
    finally:
        # Reached on success, refusal and Ctrl-C alike: no partial file stays behind.
        shutil.rmtree(staging, ignore_errors=True)
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
    return folder
