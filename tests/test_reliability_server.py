"""Reliability: a real `mnistlab serve` process on 127.0.0.1 under bad and concurrent requests.

Every answer has a proper status (2xx for good images, 4xx JSON for bad ones), the server
keeps serving afterwards, and its memory stays bounded. See docs/reliability.md.
"""

from __future__ import annotations

import base64
import io
import json
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
def served_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serve")
    write_fake_mnist(base / "data" / "mnist", n_train=200, n_test=50)
    assert main(["train", "--model", "logistic", "--epochs", "1", "--data-dir", str(base / "data"),
                 "--out", str(base / "runs"), "--name", "s", "-q", "--no-plots"]) == 0
    return base / "runs" / "s"


@pytest.fixture(scope="module")
def server(served_run):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "serve", str(served_run), "--port", str(port)],
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
            (dict(content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}), 400),
            (dict(content=PNG, headers={"content-type": "image/png", "host": "rebound.example"}), 403),
            (dict(content=PNG, headers={"content-type": "image/png", "origin": "http://evil.example"}), 403),
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


def _bar_png(side: int) -> bytes:
    """A white bar on black, side x side pixels: a large image in a small PNG."""
    img = np.zeros((side, side), dtype=np.uint8)
    img[side // 5 : -side // 5, side // 2 - side // 30 : side // 2 + side // 30] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_large_uploads_do_not_stall_other_clients(server):
    """Six clients upload 20-megapixel PNGs (and images just under the server's 4 MP limit) while
    another polls /api/health: decoding happens off the event loop, so health stays fast."""
    url, proc = server
    huge, large = _bar_png(4470), _bar_png(1990)
    before = rss_kb(proc.pid)

    def upload(i: int) -> int:
        with httpx.Client(base_url=url, timeout=120) as c:
            r = c.post("/api/predict", content=huge if i % 2 else large, headers={"content-type": "image/png"})
            assert _is_json_error(r) if r.status_code >= 400 else "prediction" in r.json()
            return r.status_code

    latencies = []
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(upload, i) for i in range(12)]
        with httpx.Client(base_url=url, timeout=60) as c:
            while not all(f.done() for f in futures):
                start = time.perf_counter()
                assert c.get("/api/health").status_code == 200
                latencies.append(time.perf_counter() - start)
                time.sleep(0.02)
        statuses = [f.result() for f in futures]
    grown_mb = (rss_kb(proc.pid) - before) / 1024
    assert max(latencies) < 1.0, f"/api/health took up to {max(latencies):.2f} s ({len(latencies)} polls)"
    assert statuses.count(200) == 6 and statuses.count(400) == 6, statuses  # 20 MP: over the server's limit
    assert grown_mb < 250, f"RSS grew by {grown_mb:.0f} MB"


def test_malformed_http_and_head_requests(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    for length in (b"abc", b"-1"):  # refused by the HTTP parser itself, before the app: JSON all the same
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                      b"Content-Length: " + length + b"\r\n\r\nxxxxx")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), answer
        assert "malformed" in json.loads(body)["error"]
    for path in ("/", "/api/health", "/static/index.html"):
        r = httpx.head(f"{url}{path}", timeout=10)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnistlab", "serve", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)


@pytest.mark.parametrize("port, code, message", [("99999", 2, "--port"), ("-1", 2, "--port"),
                                                 ("busy", 1, "in use")])
def test_bad_or_busy_port_is_one_line_before_serving(server, served_run, port, code, message):
    if port == "busy":
        port = server[0].rsplit(":", 1)[1]  # the module's server holds it
    r = _serve(str(served_run), "--port", port)
    assert r.returncode == code and "serving" not in r.stdout, (r.returncode, r.stdout, r.stderr[-500:])
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and port in r.stderr, r.stderr
