"""Fetching one file from a mirror: streamed, size-capped, refusing HTML pages and short transfers."""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mnistlab.errors import DataError

_CHUNK = 1 << 20
_USER_AGENT = "mnistlab (python urllib)"


class MirrorFailed(Exception):
    """One mirror could not deliver one file; the message is what it said."""


def default_mirrors(spec: Any) -> list[str]:
    """$MNISTLAB_MIRRORS (comma-separated base URLs) if set, else the catalog's mirrors."""
    env = os.environ.get("MNISTLAB_MIRRORS", "")
    mirrors = [m.strip() for m in env.split(",") if m.strip()]
    return mirrors or list(spec.mirrors)


def fetch_url(url: str, dest: Path, *, timeout: float, progress: bool, max_bytes: int) -> None:
    """Stream `url` into the open-for-writing path `dest`; MirrorFailed on anything but a whole file.

    More than `max_bytes` (announced or sent) is refused as soon as it shows.
    """
    from mnistlab.training.progress import progress_bar

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status = getattr(resp, "status", None)  # None for file:// URLs
            if status is not None and status != 200:
                raise MirrorFailed(f"HTTP {status}")
            length_header = resp.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            if length is not None and length > max_bytes:
                raise MirrorFailed(f"announces {length} bytes, more than the {max_bytes} this file can take")
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
                        raise MirrorFailed(f"returned {kind} (Content-Type {content_type or 'unknown'})")
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
                        raise MirrorFailed(f"sent more than the {max_bytes} bytes this file can take")
                    bar.update(len(chunk))
            # http.client returns a short body without complaint when the connection drops.
            if length is not None and received < length:
                raise MirrorFailed(f"transfer cut short ({received} of {length} bytes)")
            if received == 0:
                raise MirrorFailed("empty response")
    except MirrorFailed:
        raise
    except urllib.error.HTTPError as e:
        raise MirrorFailed(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise MirrorFailed(f"cannot connect ({e.reason})") from None
    except TimeoutError:
        raise MirrorFailed(f"timed out after {timeout:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as e:
        raise MirrorFailed(f"{type(e).__name__}: {e}") from None


def dataset_folder(root: str | Path, name: str) -> Path:
    """`root/name`, created if needed; a folder that cannot be made is one DataError naming --data-dir."""
    folder = Path(root).expanduser() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {folder}: {e.strerror or e}; choose another --data-dir") from None
    return folder
