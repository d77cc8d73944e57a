"""Shared fixtures: a tiny learnable MNIST-shaped dataset, and the real MNIST when available."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from PIL import Image

from mnistlab.data import DATASETS, DatasetSpec

# Re-exported: test modules import the made-up dataset from here.
from mnistlab.data.synthetic import make_fake_mnist, write_fake_mnist  # noqa: F401

# The fake dataset sits where MNIST goes but is not the official files: loading it warns
# (DataWarning, "not the official ... files"). Expected here, so it is silenced for the suite;
# tests that check the warning use pytest.warns, which sees it regardless.
_FAKE_WARNING_FILTER = "ignore:.*are not the official .* files:UserWarning"


def _small_idx_files() -> dict[str, bytes]:
    """Decompressed IDX content of a 30/10-image dataset by file key, for the download tests' mirrors."""
    from mnistlab.data.idx import idx_bytes

    rng = np.random.default_rng(1)
    return {
        "train_images": idx_bytes(rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)),
        "train_labels": idx_bytes((np.arange(30) % 10).astype(np.uint8)),
        "test_images": idx_bytes(rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)),
        "test_labels": idx_bytes((np.arange(10) % 10).astype(np.uint8)),
    }


SMALL_IDX_RAW = _small_idx_files()
SMALL_IDX_GZ = {key: gzip.compress(data, mtime=0) for key, data in SMALL_IDX_RAW.items()}


# The standard MNIST file names by key, as the loopback mirrors serve them.
NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class Server:
    """A ThreadingHTTPServer on 127.0.0.1:0 serving `routes`: path -> (status, content type, body, mode).

    mode "stall" waits 1 s before answering; mode "cut" sends a Content-Length larger than the body
    and closes the connection; mode "nolength" sends no Content-Length (the body ends when the
    connection closes).
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes, str]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                hits.append(self.path)
                not_found = (404, "text/html", b"<h1>Not Found</h1>", "")
                status, ctype, body, mode = routes.get(self.path, not_found)
                if mode == "stall":
                    time.sleep(1.0)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    if mode != "nolength":
                        self.send_header("Content-Length", str(len(body) * 2 if mode == "cut" else len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test): expected
                if mode in ("cut", "nolength"):
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def serve_dataset(
        self, prefix: str, files: dict[str, bytes] | None = None, mode: str = "", ctype: str = "application/x-gzip"
    ) -> str:
        """Serve the .gz files (default: SMALL_IDX_GZ) under /prefix/ and return that base URL."""
        for key, body in (files or SMALL_IDX_GZ).items():
            self.routes[f"/{prefix}/{NAMES[key]}"] = (200, ctype, body, mode)
        return f"{self.url}/{prefix}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def tiny_spec(monkeypatch: pytest.MonkeyPatch) -> DatasetSpec:
    """A catalog entry 'tiny' for the files above (the production code path, only the catalog differs)."""
    spec = DatasetSpec(
        name="tiny",
        files={key: (NAMES[key], hashlib.sha256(SMALL_IDX_RAW[key]).hexdigest()) for key in NAMES},
        mirrors=("http://127.0.0.1:9/never-used/",),
        classes=tuple(str(i) for i in range(10)),
        mean=0.5, std=0.29, num_train=30, num_test=10,
    )
    monkeypatch.setitem(DATASETS, "tiny", spec)
    monkeypatch.delenv("MNISTLAB_MIRRORS", raising=False)
    return spec


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height (1-bit gray) with a tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


EXIF_ORIENTATION = 0x0112  # the EXIF tag


def seven(h: int = 64, w: int = 48) -> np.ndarray:
    """A "7": a bar along the top and a stroke down the right; no rotation or flip maps it onto itself."""
    a = np.zeros((h, w), np.uint8)
    a[h // 8 : h // 8 + 6, w // 6 : -w // 6] = 255
    a[h // 8 : -h // 8, -w // 6 - 6 : -w // 6] = 255
    return a


def save_sideways(upright: np.ndarray, path: Path | BinaryIO, fmt: str) -> Path | BinaryIO:
    """Save as a phone camera does: pixels rotated 90 degrees, EXIF Orientation=6 ("rotate 90 CW to show")."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.rot90(upright)).save(path, format=fmt, exif=exif)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", _FAKE_WARNING_FILTER)


@pytest.fixture
def fake_mnist_root(tmp_path: Path) -> Path:
    """A data root whose mnist/ holds a fake MNIST: 600 train / 200 test 28x28 images, 10 balanced
    classes of distinct jittered squares on noise (learnable above chance in one quick epoch).

    Use as `load_dataset("mnist", str(fake_mnist_root))` or `--data-dir ROOT --dataset mnist`.
    Loading warns (DataWarning) that the files are not the official ones; mean/std are then
    computed from these images.
    """
    root = tmp_path / "data"
    write_fake_mnist(root / "mnist")
    return root


@pytest.fixture
def quick_run(fake_mnist_root: Path, tmp_path: Path) -> Path:
    """A logistic-regression run on the fake dataset (a second or two)."""
    import mnistlab

    run = mnistlab.train(mnistlab.TrainConfig(model="logistic", data_dir=str(fake_mnist_root), epochs=1,
                                              out=str(tmp_path / "runs"), progress="quiet", plots=False))
    return run.path


@pytest.fixture
def real_data_root() -> Path:
    """The data root from $MNISTLAB_DATA holding the real MNIST in mnist/; skips the test otherwise."""
    env = os.environ.get("MNISTLAB_DATA", "").strip()
    if not env:
        pytest.skip("MNISTLAB_DATA is not set (e.g. MNISTLAB_DATA=/work/shared/data)")
    root = Path(env).expanduser()
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    missing = [n for n in names if not ((root / "mnist" / n).is_file() or (root / "mnist" / f"{n}.gz").is_file())]
    if missing:
        pytest.skip(f"MNISTLAB_DATA={root} lacks mnist/{', mnist/'.join(missing)}")
    return root
