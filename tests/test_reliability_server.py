"""Reliability: a real `mnistlab serve` process on 127.0.0.1 under bad and concurrent requests.

Every answer has a proper status (2xx for good images, 4xx JSON for bad ones), the server
keeps serving afterwards, and its memory stays bounded. See docs/reliability.md.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_fake_mnist
from mnistlab.cli import main

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="mnistlab serve needs fastapi")
pytest.importorskip("uvicorn", reason="mnistlab serve needs uvicorn")


def _png() -> bytes:
    img = np.zeros((28, 28), dtype=np.uint8)
    img[6:22, 12:16] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    write_fake_mnist(base / "data" / "mnist", n_train=200, n_test=50)
    assert main(["train", "--model", "logistic", "--epochs", "1", "--data-dir", str(base / "data"),
                 "--out", str(base / "runs"), "--name", "s", "-q", "--no-plots"]) == 0
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "serve", str(base / "runs" / "s"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    yield url, proc
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _is_json_error(r) -> bool:
    return r.headers.get("content-type", "").startswith("application/json") and "error" in r.json()


def test_bad_requests_get_4xx_json(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=10) as c:
        cases = [
            (dict(content=b"\0" * (3 * 1024 * 1024), headers={"content-type": "image/png"}), 413),
            (dict(content=b"this is not an image", headers={"content-type": "image/png"}), 415),
            (dict(content=b'{"image": "data:image/png;base64,', headers={"content-type": "application/json"}), 400),
            (dict(json={"image": "data:image/png;base64,!!!"}), 422),
            (dict(json={"picture": 1}), 422),
            (dict(content=b"x", headers={"content-type": "text/plain"}), 415),
            (dict(files={"image": ("a.png", b"GIF89a garbage", "image/png")}), 415),
        ]
        for kwargs, status in cases:
            r = c.post("/api/predict", **kwargs)
            assert r.status_code == status, (kwargs.get("headers"), r.status_code, r.text[:200])
            assert _is_json_error(r), r.text[:200]
        r = c.post("/api/predict", content=PNG, headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["prediction"] in r.json()["labels"]


def test_200_concurrent_requests_then_still_serving_with_bounded_memory(server):
    url, proc = server
    good_json = {"image": "data:image/png;base64," + base64.b64encode(PNG).decode()}

    def one(i: int) -> tuple[int, int]:
        with httpx.Client(base_url=url, timeout=30) as c:
            kind = i % 4
            if kind == 0:
                r = c.post("/api/predict", content=PNG, headers={"content-type": "image/png"})
            elif kind == 1:
                r = c.post("/api/predict", json=good_json)
            elif kind == 2:
                r = c.post("/api/predict", content=b"junk" * 100, headers={"content-type": "image/png"})
            else:
                r = c.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"})
            if r.status_code >= 400:
                assert _is_json_error(r)
            return kind, r.status_code

    # warm up, then measure
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(40)))
    before = rss_kb(proc.pid)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(200)))
        results += list(pool.map(one, range(200)))
    after = rss_kb(proc.pid)
    expected = {0: 200, 1: 200, 2: 415, 3: 400}
    for kind, status in results:
        assert status == expected[kind], (kind, status)
    assert proc.poll() is None
    assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
    assert (after - before) < 50 * 1024, f"RSS grew by {(after - before) / 1024:.1f} MB"
