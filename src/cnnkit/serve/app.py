"""`cnnkit serve`: a trained or exported model behind HTTP (FastAPI on uvicorn).

``POST /predict`` takes an image as a multipart file (field ``file``, or the form's only file)
or as the raw request body and returns the task's JSON (top-k classes, boxes, or class shares
with the mask as a PNG). ``/healthz`` says the process is alive (GET or HEAD), ``/readyz`` that
the model is loaded and warmed up, ``/metrics`` is Prometheus text, ``/docs`` the OpenAPI page
(Swagger UI from fastapi-offline's files: it works without internet), ``/`` a page to try it.

Hostile input is refused early and in one line of JSON (``{"error": reason, "detail": text}``,
as are unknown paths and methods): a body over the upload limit is 413 from its Content-Length
(or as soon as the stream passes it), a body not all there within the upload timeout 408, a
header claiming too many pixels 422 before any pixel is decoded, bytes that are not a
PNG/JPEG/GIF/BMP/TIFF/WebP 415, a truncated or corrupt image 422, a full queue 503 with
Retry-After. Uploads are never written to disk and their names are never used; no request can
make the server load a model. Reading an upload is serve.upload's.
"""

from __future__ import annotations

import base64
import gc
import io
import logging
import os
import secrets
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from cnnkit.data.decode import ImageDecodeError, NotAnImage, TooManyPixels, decode_image
from cnnkit.errors import CnnkitError
from cnnkit.serve.batcher import Batcher, QueueFull
from cnnkit.serve.budget import PixelBudget
from cnnkit.serve.metrics import ServerMetrics
from cnnkit.serve.priority import lower_other_threads, lower_this_thread
from cnnkit.serve.protocol import HeadAsGet, header_deadline
from cnnkit.serve.upload import PREDICT_BODY, Refused, check_header, image_bytes

API_KEY_ENV = "CNNKIT_API_KEY"
SERVE_WORKER_NICE = 10
PAGE = Path(__file__).with_name("page.html")
HTTP_REASONS = {404: "not_found", 405: "method_not_allowed"}
log = logging.getLogger("cnnkit.serve")


# upper bounds that keep a server answering (NaN fails every comparison, so it is refused too)
MAX_WAIT_MS = 60_000  # a batch waits at most a minute for company
MAX_UPLOAD_MB = 4096
MAX_UPLOAD_TIMEOUT_S = 3600


@dataclass
class ServeOptions:
    """Limits and batching of one server."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    queue_size: int = 64
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000
    upload_timeout_s: float = 30.0  # the whole body, from the headers on
    top_k: int = 5
    api_key: str | None = None
    # compute threads this many nice levels below the event loop (serve.priority); 0: left
    # alone. `cnnkit serve` and serve() use SERVE_WORKER_NICE: an app inside another program
    # changes its threads' priorities only when asked (no process can raise them back)
    worker_nice: int = 0

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise CnnkitError(  # an empty key would let every request in while /info says not
                "--api-key is empty (an unset variable?): give a key, or leave the option out"
            )
        checks = {
            "--max-batch": self.max_batch >= 1,
            "--max-wait-ms": 0 <= self.max_wait_ms <= MAX_WAIT_MS,
            "--queue": self.queue_size >= 1,
            "--max-upload-mb": 0 < self.max_upload_mb <= MAX_UPLOAD_MB,
            "--max-pixels": self.max_pixels >= 1,
            "--upload-timeout": 0 < self.upload_timeout_s <= MAX_UPLOAD_TIMEOUT_S,
            "--top-k": self.top_k >= 1,
            "--worker-nice": 0 <= self.worker_nice <= 19,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise CnnkitError(
                f"{', '.join(bad)} out of range (sizes and limits positive and finite: "
                f"--max-wait-ms up to {MAX_WAIT_MS:,}, --max-upload-mb up to {MAX_UPLOAD_MB:,}, "
                f"--upload-timeout up to {MAX_UPLOAD_TIMEOUT_S:,} s; --worker-nice 0-19)"
            )

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _result_json(predictor: Any, result: Any) -> dict[str, Any]:
    out = result.to_dict()
    out.pop("source", None)  # an upload has no path, and its client name is not echoed
    out.pop("files", None)
    if predictor.task == "segment":
        from cnnkit.tasks.segment.draw import save_class_png

        buffer = io.BytesIO()
        save_class_png(result.mask, buffer, len(predictor.classes))
        out["mask_png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"task": predictor.task, **out}


def _predict_batch(predictor: Any, top_k: int):
    def run(images: list[np.ndarray]) -> list[Any]:
        if predictor.task == "classify":
            return predictor.predict(list(images), top_k=min(top_k, len(predictor.classes)))
        return predictor.predict(list(images))

    return run


def _decode(predictor: Any, data: bytes, max_pixels: int, nice: int) -> np.ndarray:
    """The upload's pixels (in a worker thread, beside the model's, below the event loop's
    priority): a classifier's already at its input size, so the model's thread only runs the
    model."""
    lower_this_thread(nice)
    image = decode_image(data, max_pixels=max_pixels)
    return predictor.decode(image) if predictor.task == "classify" else image


_gc_lock = threading.Lock()
_gc_state = {"serving": 0, "froze": False}  # apps serving in this process; whether we froze


def _freeze_startup_objects() -> None:
    """torch, onnxruntime and FastAPI leave ~370,000 objects that Python's full collection
    walks every time: 165 ms here, during which nothing is answered (the slowest refusal under
    load was exactly that). Frozen, they are out of every collection while an app serves."""
    with _gc_lock:
        if _gc_state["serving"] == 0:  # a host program's own freeze is left to it
            _gc_state["froze"] = gc.get_freeze_count() == 0
        _gc_state["serving"] += 1
        gc.collect()
        gc.freeze()


def _thaw_startup_objects() -> None:
    """Back into collection once the last app in this process stops (if cnnkit froze them)."""
    with _gc_lock:
        _gc_state["serving"] -= 1
        if _gc_state["serving"] == 0 and _gc_state["froze"]:
            gc.unfreeze()


def create_app(model: Any, options: ServeOptions | None = None) -> FastAPI:
    """The app for ``model``: a run folder, checkpoint or exported file, or a loaded
    predictor. The model is loaded here (a bad path fails before any server starts) and warmed
    up when the app starts; /readyz says when."""
    options = options or ServeOptions()
    if options.api_key is None:
        options.api_key = os.environ.get(API_KEY_ENV) or None
    if isinstance(model, (str, os.PathLike)):
        from cnnkit.predict import load

        name = str(model)
        predictor = load(model)
    else:
        predictor, name = model, str(getattr(model, "path", None) or type(model).__name__)
    if predictor.task == "generate":
        raise CnnkitError("cnnkit serve does not serve GANs yet; `cnnkit generate` makes images")
    if predictor.task not in ("classify", "segment", "detect"):
        raise CnnkitError(
            "cnnkit serve takes classifiers, detectors and segmenters; an embedding model "
            "is used through `cnnkit faces` (or cnnkit.load(...).embed in Python)"
        )
    if getattr(predictor, "multilabel", False):
        from cnnkit.export import MULTILABEL_REFUSED

        raise CnnkitError(MULTILABEL_REFUSED.format(command="serve"))
    metrics = ServerMetrics()
    batcher = Batcher(
        _predict_batch(predictor, options.top_k),
        options.max_batch,
        options.max_wait_ms,
        options.queue_size,
        metrics.observe_batch,
        thread_nice=options.worker_nice,
    )
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        warm = np.full((64, 64, 3), 127, np.uint8)
        await batcher.run_in_model_thread(lambda: _predict_batch(predictor, 1)([warm]))
        lower_other_threads(options.worker_nice)  # the runtimes' pools exist by now
        _freeze_startup_objects()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            _thaw_startup_objects()
            await batcher.stop()

    app = FastAPIOffline(  # FastAPI with /docs's Swagger UI served from its own files, no CDN
        title="cnnkit",
        description=f"{predictor.task} model {Path(name).name}: POST an image to /predict",
        lifespan=lifespan,
        redirect_slashes=False,  # /predict/ is a JSON 404, not a redirect a client may not follow
    )
    app.add_middleware(HeadAsGet)  # HEAD on every GET route
    app.state.predictor, app.state.options, app.state.metrics = predictor, options, metrics

    def refuse(endpoint: str, error: Refused) -> JSONResponse:
        metrics.requests.labels(endpoint, str(error.status)).inc()
        metrics.errors.labels(error.reason).inc()
        return JSONResponse(
            {"error": error.reason, "detail": error.message},
            status_code=error.status,
            headers=error.headers,
        )

    budget = PixelBudget(2 * options.max_pixels)

    async def _decode_and_predict(data: bytes) -> Any:
        try:
            image = await run_in_threadpool(
                _decode, predictor, data, options.max_pixels, options.worker_nice
            )
        except ImageDecodeError as exc:
            raise Refused(422, "unreadable_image", str(exc)) from None
        metrics.waiting.set(batcher.waiting)
        try:
            return await batcher.submit(image)
        except QueueFull:
            raise Refused(
                503, "busy", "the queue is full; retry shortly", {"Retry-After": "1"}
            ) from None
        except CnnkitError as exc:
            raise Refused(422, "unpredictable", str(exc)) from None

    # with --api-key, /docs shows the header to send (the check itself is the handler's)
    key_header = [Security(APIKeyHeader(name="X-API-Key", auto_error=False))]

    @app.post(
        "/predict",
        summary="Predict one image (multipart field 'file' or the raw body)",
        openapi_extra=PREDICT_BODY,
        dependencies=key_header if options.api_key is not None else None,
    )
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        try:
            if options.api_key is not None:
                given = request.headers.get("x-api-key", "")
                auth = request.headers.get("authorization", "")
                if auth.lower().startswith("bearer "):
                    given = given or auth[7:]
                if not secrets.compare_digest(given.encode(), options.api_key.encode()):
                    raise Refused(
                        401,
                        "unauthorized",
                        "missing or wrong API key (X-API-Key)",
                        {"WWW-Authenticate": 'Bearer realm="cnnkit"'},
                    )
            data = await image_bytes(request, options.max_bytes, options.upload_timeout_s)
            try:
                pixels = check_header(data, options.max_pixels)
            except TooManyPixels as exc:
                raise Refused(422, "too_many_pixels", str(exc)) from None
            except NotAnImage as exc:
                raise Refused(415, "unsupported_media", str(exc)) from None
            except ImageDecodeError as exc:
                raise Refused(422, "unreadable_image", str(exc)) from None
            async with budget.hold(pixels):  # decoded pixels held at once stay bounded
                result = await _decode_and_predict(data)
        except Refused as error:
            return refuse("/predict", error)
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer
            metrics.requests.labels("/predict", "499").inc()
            return Response(status_code=499)
        body = _result_json(predictor, result)
        metrics.latency.observe(time.perf_counter() - started)
        metrics.requests.labels("/predict", "200").inc()
        return JSONResponse(body)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz() -> Response:
        if not state["ready"]:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "task": predictor.task, "model": Path(name).name})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        metrics.waiting.set(batcher.waiting)
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/info", summary="The model's task, classes and input")
    async def info() -> dict[str, Any]:
        return {
            "task": predictor.task,
            "classes": list(predictor.classes),
            "input_size": list(predictor.preprocessing.size),
            "model": Path(name).name,
            "api_key_required": options.api_key is not None,
            "max_upload_bytes": options.max_bytes,
        }

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # an unknown path or method: the same one line of JSON as every other refusal
        reason = HTTP_REASONS.get(exc.status_code, f"http_{exc.status_code}")
        metrics.errors.labels(reason).inc()
        return JSONResponse(
            {"error": reason, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:  # never a traceback
        log.exception("internal error on %s", request.url.path)
        metrics.errors.labels("internal").inc()
        return JSONResponse({"error": "internal", "detail": "internal server error"}, 500)

    return app


def serve(
    model: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions | None = None,
    log_level: str = "info",
) -> None:
    """Load ``model`` and serve it until interrupted. The address is bound before the model
    loads, so a port in use is one line, not a loaded model and a server error. Without
    ``options``, the compute threads run ``SERVE_WORKER_NICE`` levels below the event loop."""
    import uvicorn

    sock = listening_socket(host, port)
    options = options or ServeOptions(worker_nice=SERVE_WORKER_NICE)
    try:
        app = create_app(model, options)
        print(
            f"cnnkit: serving {model} ({app.state.predictor.task}) on http://{host}:{port}"
            f"  (page /, API /docs, POST /predict)",
            flush=True,
        )
        # headers too get --upload-timeout (slowloris); library warnings about a user's
        # image (PIL's corrupt EXIF, ...) are no server news
        warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
        http = header_deadline(options.upload_timeout_s)
        server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, http=http))
        server.run(sockets=[sock])
    finally:
        sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), or CnnkitError saying why it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise CnnkitError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise CnnkitError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock
