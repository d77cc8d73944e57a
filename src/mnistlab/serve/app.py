"""The FastAPI app: a drawing page and a JSON prediction API over one trained model.

Routes:
    GET  /                 the page (static/index.html): a drawing pad, or an image upload for colour runs
    GET  /static/{name}    the page's own files, and nothing else
    GET  /api/health       {"status": "ok", "labels": [...], "image_size": N, "in_channels": C}
    POST /api/predict      an image -> {"prediction", "confidence", "probabilities", "labels"}

POST /api/predict accepts the image three ways: a multipart form with the file in field
`image`, the raw bytes with an image/* content type, or JSON {"image": "data:image/png;base64,..."}.
Bodies over `max_body` bytes are refused with 413 (from Content-Length, and while reading, for
clients that lie or stream); images over `max_pixels` with 400, from their header, before any
pixel is decoded. Decoding and the model run in at most `workers` threads, off the event loop,
so a slow upload never holds up another client (or /api/health). Requests for another Host, and
browser POSTs from another site's page, get 403 (see hosts.py). Every error is JSON: {"error": "..."}.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mnistlab.predict import ImageError, Predictor, open_image
from mnistlab.serve.hosts import HostGuard, HostPolicy, host_policy

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY = 2 * 1024 * 1024  # a drawn digit is a few KB; 2 MB leaves room for photos
# Preprocessing holds several float copies of an image: per request, predict's 20 MP would be
# hundreds of MB and seconds of CPU; 4 MP (a 2000x2000 scan) is a fifth of that.
MAX_PIXELS = 4_000_000
WORKERS = 2  # images decoded and predicted at once; the others wait their turn
_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                ".ico": "image/x-icon"}


class ApiError(Exception):
    """An error answered as {"error": message} with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, f"request body too large ({declared} bytes; the limit is {limit})")
        except ValueError:
            raise ApiError(400, "bad Content-Length header") from None
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body too large (over {limit} bytes)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client disconnected") from None
    return b"".join(chunks)


def _decode_data_url(value: Any) -> bytes:
    """Bytes of a `data:image/...;base64,...` URL (a bare base64 string is accepted too)."""
    if not isinstance(value, str) or not value:
        raise ApiError(422, 'field "image" must be a data URL string like "data:image/png;base64,..."')
    payload = value
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep or ";base64" not in header:
            raise ApiError(422, 'field "image" must be a base64 data URL ("data:image/png;base64,...")')
    # Tools (base64, openssl, MIME) wrap base64 at 64 or 76 columns: line breaks are not errors.
    payload = "".join(payload.split())
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, 'field "image" is not valid base64') from None


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes, whichever of the three encodings the client used."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request, limit)
    if ctype == "multipart/form-data":
        # Replay the (size-checked) body into a fresh Request so Starlette parses the form.
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        replay = Request(request.scope, receive)
        try:
            form = await replay.form(max_files=1, max_fields=10)
        except Exception:  # noqa: BLE001 - malformed multipart
            raise ApiError(400, "malformed multipart form") from None
        upload = form.get("image")
        if upload is None:
            raise ApiError(422, 'multipart form has no file field "image"')
        if isinstance(upload, str):
            return _decode_data_url(upload)
        data = await upload.read()
        await form.close()
        return data
    if ctype == "application/json":
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "body is not valid JSON") from None
        except RecursionError:  # [[[[... nested deeper than Python's parser recurses
            raise ApiError(400, "body is not valid JSON (nested too deeply)") from None
        if not isinstance(doc, dict) or "image" not in doc:
            raise ApiError(422, 'JSON body must be an object with an "image" field')
        return _decode_data_url(doc["image"])
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return body
    raise ApiError(
        415, f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data (field \"image\"), "
        "image/png|jpeg|bmp|gif bytes, or JSON {\"image\": \"data:image/png;base64,...\"}",
    )


def _predict_upload(predictor: Predictor, data: bytes, max_pixels: int) -> dict[str, Any]:
    """The JSON answer for one uploaded image (runs in a worker thread: decoding is the slow part)."""
    try:
        image = open_image(data, name="uploaded image", max_pixels=max_pixels)
    except ImageError as exc:
        raise ApiError(415 if "supported" in str(exc) or "not an image" in str(exc) else 400, str(exc)) from None
    result = predictor.predict_images([image], ["upload"], top_k=len(predictor.classes))[0]
    return {
        "prediction": result.prediction,
        "confidence": result.confidence,
        "probabilities": result.probabilities,
        "labels": predictor.classes,
    }


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": message}, with its status (404 and 405 included)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        return _error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, f"invalid request: {exc.errors()[:1]}")

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        # A bug of ours, not the client's: still JSON (the traceback goes to the server's log).
        return _error(500, f"internal error: {type(exc).__name__}")


def create_app(predictor: Predictor, *, max_body: int = MAX_BODY, max_pixels: int = MAX_PIXELS,
               workers: int = WORKERS, hosts: HostPolicy | None = None, title: str = "mnistlab") -> FastAPI:
    """The app for one loaded model.

    Args:
        predictor: the model.
        max_body: the largest request body accepted (bytes).
        max_pixels: the largest image accepted (pixels, from its header).
        workers: how many uploads are decoded and predicted at once (in threads).
        hosts: the Host names answered (default: a loopback server's, `host_policy("127.0.0.1")`).
        title: the app's title.
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(HostGuard, policy=hosts if hosts is not None else host_policy("127.0.0.1"))
    _add_error_handlers(app)
    limiter = anyio.CapacityLimiter(max(1, workers))
    # Only the files shipped beside this module are served: the name must be one of them,
    # so no path (.., %2e%2e, absolute, symlink games) can reach anything else.
    static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and not p.name.startswith(".")} \
        if STATIC_DIR.is_dir() else {}

    def _static(name: str) -> FileResponse:
        path = static_files.get(name)
        if path is None:
            raise StarletteHTTPException(404)
        return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "no-cache"})

    # HEAD as well as GET: link checkers and `curl -I` ask for the headers only.
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return _static("index.html")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(name: str) -> FileResponse:
        return _static(name)

    @app.api_route("/api/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        # in_channels tells the page what to offer: a drawing pad (digits) or an image upload (colour).
        return {"status": "ok", "labels": predictor.classes, "image_size": predictor.image_size,
                "in_channels": predictor.in_channels}

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        data = await _image_bytes(request, max_body)
        return await anyio.to_thread.run_sync(_predict_upload, predictor, data, max_pixels, limiter=limiter)

    return app
