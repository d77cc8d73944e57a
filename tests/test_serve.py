"""The prediction server's API through FastAPI's TestClient: encodings, limits, errors, static files."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import save_sideways, seven  # noqa: E402
from mnistlab.predict import Predictor  # noqa: E402
from mnistlab.serve.app import create_app  # noqa: E402

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def client() -> Any:
    """An app over a fresh (untrained) fast model: the API's shape does not depend on training."""
    import torch

    from mnistlab.models import create_model

    torch.manual_seed(0)
    predictor = Predictor(create_model("fast").eval(), [0.1307], [0.3081], [str(i) for i in range(10)])
    # The server answers its own host names only (DNS rebinding guard): TestClient's "testserver" is not one.
    with TestClient(create_app(predictor, max_body=LIMIT), base_url="http://127.0.0.1") as c:
        yield c


def digit_png(size: int = 120, mode: str = "L") -> bytes:
    """A white vertical bar (a "1") on black, encoded as PNG."""
    a = np.zeros((size, size), np.uint8)
    a[size // 6 : -size // 6, size // 2 - size // 16 : size // 2 + size // 16] = 255
    buf = io.BytesIO()
    Image.fromarray(a).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def check_prediction(body: dict[str, Any]) -> None:
    assert set(body) == {"prediction", "confidence", "probabilities", "labels"}
    assert body["labels"] == [str(i) for i in range(10)]
    assert len(body["probabilities"]) == 10
    assert abs(sum(body["probabilities"]) - 1.0) < 1e-4
    assert body["prediction"] in body["labels"]
    assert body["confidence"] == pytest.approx(max(body["probabilities"]))


def test_index_page(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<canvas" in r.text and "/api/predict" in r.text and "pointerdown" in r.text


def test_health(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_predict_multipart(client: TestClient) -> None:
    r = client.post("/api/predict", files={"image": ("d.png", digit_png(), "image/png")})
    assert r.status_code == 200, r.text
    check_prediction(r.json())


def test_predict_raw_bytes(client: TestClient) -> None:
    r = client.post("/api/predict", content=digit_png(mode="RGB"), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    check_prediction(r.json())


def test_predict_json_data_url(client: TestClient) -> None:
    url = "data:image/png;base64," + base64.b64encode(digit_png()).decode()
    r = client.post("/api/predict", json={"image": url})
    assert r.status_code == 200, r.text
    check_prediction(r.json())


def test_same_answer_every_encoding(client: TestClient) -> None:
    png = digit_png()
    a = client.post("/api/predict", files={"image": ("d.png", png, "image/png")}).json()
    b = client.post("/api/predict", content=png, headers={"content-type": "image/png"}).json()
    c = client.post("/api/predict", json={"image": "data:image/png;base64," + base64.b64encode(png).decode()}).json()
    assert a == b == c


def test_exif_orientation_is_applied(client: TestClient) -> None:
    upright, sideways = io.BytesIO(), io.BytesIO()
    Image.fromarray(seven()).save(upright, format="PNG")
    save_sideways(seven(), sideways, "PNG")
    stored = io.BytesIO()
    Image.open(io.BytesIO(sideways.getvalue())).save(stored, format="PNG")  # the same pixels, no EXIF
    answers = [client.post("/api/predict", content=buf.getvalue(), headers={"content-type": "image/png"}).json()
               for buf in (upright, sideways, stored)]
    assert answers[1]["probabilities"] == answers[0]["probabilities"]
    assert answers[2]["probabilities"] != answers[0]["probabilities"]  # the orientation matters to the model


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 415),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400),
        ({"content": b"{bad json", "headers": {"content-type": "application/json"}}, 400),
        ({"json": {"picture": "x"}}, 422),
        ({"json": {"image": "data:image/png;base64,!!!"}}, 422),
        ({"json": {"image": 3}}, 422),
        ({"json": ["image"]}, 422),
        ({"files": {"other": ("d.png", b"x", "image/png")}}, 422),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
        ({"content": b"[" * 30_000 + b"]" * 30_000, "headers": {"content-type": "application/json"}}, 400),
    ],
    ids=["garbage-bytes", "empty", "bad-json", "missing-field", "bad-base64", "not-a-string", "json-list",
         "wrong-form-field", "text-plain", "nested-30000-deep"],
)
def test_bad_requests_are_json_errors(client: TestClient, kwargs: dict[str, Any], status: int) -> None:
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_base64_with_line_breaks_is_accepted(client: TestClient) -> None:
    encoded = base64.b64encode(digit_png()).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"  # as `base64` writes it
    plain = client.post("/api/predict", json={"image": "data:image/png;base64," + encoded})
    r = client.post("/api/predict", json={"image": "data:image/png;base64," + wrapped.replace("\n", "\r\n")})
    assert r.status_code == 200, r.text
    assert r.json() == plain.json()
    assert client.post("/api/predict", json={"image": wrapped}).json() == plain.json()


def test_images_over_the_servers_pixel_limit_are_refused_from_the_header(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("L", (2100, 2100)).save(buf, format="PNG")  # 4.4 MP: predict takes it, the server does not
    r = client.post("/api/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 400 and "2100x2100" in r.json()["error"] and "4 megapixels" in r.json()["error"]


def test_unsupported_image_format_rejected(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="TIFF")
    r = client.post("/api/predict", content=buf.getvalue(), headers={"content-type": "image/tiff"})
    assert r.status_code == 415
    assert "TIFF" in r.json()["error"]


def test_body_over_limit_by_content_length(client: TestClient) -> None:
    r = client.post("/api/predict", content=b"\0" * (LIMIT + 1), headers={"content-type": "image/png"})
    assert r.status_code == 413
    assert "too large" in r.json()["error"]


def test_body_over_limit_streamed_without_length(client: TestClient) -> None:
    def chunks() -> Any:  # a generator body is sent chunked: no Content-Length to trust
        for _ in range(LIMIT // 1024 + 2):
            yield b"\0" * 1024

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413


def test_multipart_over_limit(client: TestClient) -> None:
    r = client.post("/api/predict", files={"image": ("d.png", b"\0" * (LIMIT * 2), "image/png")})
    assert r.status_code == 413


def test_lying_content_length_header_is_rejected(client: TestClient) -> None:
    r = client.post("/api/predict", content=b"x", headers={"content-type": "image/png", "content-length": "abc"})
    assert r.status_code in (400, 413)


def test_decompression_bomb_rejected(client: TestClient) -> None:
    # 5000x5000 = 25 MP of zeros compresses to a few KB: under the body limit, over the pixel limit.
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < LIMIT
    r = client.post("/api/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 400
    assert "too large" in r.json()["error"]


@pytest.mark.parametrize(
    "path",
    ["/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
     "/static/%2Fetc%2Fpasswd", "/static/app.py", "/static/../app.py", "/etc/passwd", "/static/"],
)
def test_no_path_traversal(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "root:" not in r.text


def test_static_index_served(client: TestClient) -> None:
    assert client.get("/static/index.html").status_code == 200


def test_unknown_route_is_json_404(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}


def test_wrong_method(client: TestClient) -> None:
    r = client.get("/api/predict")
    assert r.status_code == 405
    assert "error" in r.json()


def test_head_requests_are_answered(client: TestClient) -> None:
    for path in ("/", "/api/health", "/static/index.html"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path


@pytest.mark.parametrize("host", ["rebound.example", "rebound.example:8000", "localhost.evil.example", "[::2]"])
def test_requests_for_another_host_are_refused(client: TestClient, host: str) -> None:
    # DNS rebinding: a page whose domain now points at 127.0.0.1 sends its own name as Host.
    for r in (client.get("/api/health", headers={"host": host}),
              client.post("/api/predict", content=digit_png(), headers={"host": host, "content-type": "image/png"})):
        assert r.status_code == 403 and "--allow-host" in r.json()["error"], r.text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8000", "LOCALHOST.", "[::1]:8000"])
def test_loopback_names_are_served(client: TestClient, host: str) -> None:
    assert client.get("/api/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("origin, status", [("http://evil.example", 403), ("null", 403),
                                            ("http://localhost:3000", 403), ("http://127.0.0.1", 200)])
def test_browser_posts_only_from_the_servers_own_page(client: TestClient, origin: str, status: int) -> None:
    r = client.post("/api/predict", content=digit_png(), headers={"origin": origin, "content-type": "image/png"})
    assert r.status_code == status, r.text
    assert client.get("/api/health", headers={"origin": origin}).status_code == 200  # reading: the browser's CORS


def test_host_policy_for_other_binds() -> None:
    from mnistlab.serve.hosts import host_policy

    wildcard = host_policy("0.0.0.0")
    assert wildcard.allows("192.168.1.5:8000") and wildcard.allows("[fe80::1]") and wildcard.allows("localhost")
    assert not wildcard.allows("rebound.example")
    lan = host_policy("192.168.1.5", ["digits.example.org"])
    assert lan.allows("192.168.1.5:8000") and lan.allows("digits.example.org") and not lan.allows("10.0.0.1")
    assert lan.refusal({"host": "192.168.1.5", "origin": "https://digits.example.org"}, "POST") is None
    assert host_policy("127.0.0.1", ["*"]).allows("anything.example")


def test_serve_binds_localhost_by_default() -> None:
    from mnistlab.cli import build_parser

    args = build_parser().parse_args(["serve", "runs/x"])
    assert args.host == "127.0.0.1" and args.port == 8000
