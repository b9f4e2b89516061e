"""A REST service: ``ferkit serve`` (FastAPI + uvicorn, ferkit[serve]); OpenAPI docs at /docs.

    ferkit serve                                         # http://127.0.0.1:8000, one worker
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict
    curl --data-binary @photo.jpg 'http://127.0.0.1:8000/v1/predict?model=ferplus&tta=flip'
    curl -F files=@a.jpg -F files=@b.png http://127.0.0.1:8000/v1/predict/batch

Each worker loads a model once, on its first request (the default model at start-up), and keeps
it. Hostile input gets a 4xx and ``{"detail": "<one line>"}``: a body over the size limit (413,
refused from its Content-Length before it is read, or as soon as a streamed body passes the limit),
bytes that are not an image, a truncated one or one of more pixels than ferkit reads (422; the
pixel count is checked from the header, so a decompression bomb is never decoded), unknown options
(422). The settings come from the flags or from their FERKIT_SERVE_* environment variables.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, and the Model
# enum they name is built inside create_app, from the manifest.

import argparse
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Annotated, Any

try:
    import uvicorn
    from anyio import CapacityLimiter, to_thread
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.datastructures import UploadFile as FormFile
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as e:  # `ferkit serve` prints it as one line
    raise ImportError(f"{e.name} is not installed: pip install 'ferkit[serve]'") from e

from . import __version__
from .errors import FerkitError, ImageError
from .images import read_image
from .infer import Recognizer, load
from .results import ImageResult
from .tta import TTA_MODES
from .weights import BUNDLED_DEFAULT, read_manifest

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # a request body; a 50 MP JPEG (ferkit's pixel limit) is about this size
MAX_BATCH_FILES = 64
RAW_BODY_NAME = "request body"
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 8
# /v1/predict reads its body itself (a multipart file or raw bytes): this is how /docs describes it.
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    MULTIPART: {"schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
Tta = Enum("Tta", {mode: mode for mode in TTA_MODES}, type=str)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Settings:
    """What one worker serves: ``model`` when a request names none, the body limit, ONNX Runtime threads per
    model, and how many predictions run at once (more wait their turn: memory stays bounded under load)."""

    model: str = BUNDLED_DEFAULT
    max_bytes: int = DEFAULT_MAX_BYTES
    threads: int = 1
    concurrency: int = field(default_factory=usable_cpus)

    @classmethod
    def from_env(cls) -> "Settings":
        """The settings ``ferkit serve`` hands its workers through the environment (``env_name``), defaults for
        the rest."""
        values = {}
        for f in fields(cls):
            text = os.environ.get(env_name(f.name))
            if text:
                if f.type is int and not text.isdigit():
                    raise FerkitError(f"{env_name(f.name)}={text!r}: expected a whole number")
                values[f.name] = f.type(text)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        return {env_name(f.name): str(getattr(self, f.name)) for f in fields(self)}


def env_name(setting: str) -> str:
    return f"FERKIT_SERVE_{setting.upper()}"


class Models:
    """The worker's recognizers, loaded once by name and shared by its requests (ONNX Runtime sessions are
    thread-safe)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._loaded: dict[str, Recognizer] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Recognizer:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load(name, threads=self.threads)
            return self._loaded[name]

    def names(self) -> list[str]:
        return list(self._loaded)


def too_large(max_bytes: int) -> str:
    return f"the request body is larger than the {max_bytes:,} bytes this server accepts"


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets a 413, from its Content-Length before a byte of it is
    read, or from the bytes counted as they arrive (a chunked body, or one longer than it declared)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": too_large(self.max_bytes)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)


def one_line(error: RequestValidationError) -> str:
    """FastAPI's validation errors as ``query.tta: Input should be 'none', 'flip' or 'crops'``."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())


# --- the work ----------------------------------------------------------------------------------


def prediction(recognizer: Recognizer, result: ImageResult, tta: str, threshold: float | None) -> dict:
    """The JSON of one image: ``ImageResult.to_dict()`` with the model's name and SHA-256, unsure at ``threshold``."""
    if threshold is not None:
        result = result.with_unsure_threshold(threshold)
    return {"model": recognizer.name, "model_sha256": recognizer.sha256, "tta": tta, **result.to_dict()}


def predict_one(recognizer: Recognizer, data: bytes, name: str, tta: str, threshold: float | None) -> dict:
    """One image's prediction; HTTPException 422 with ferkit's one-line reason when it is not a usable image."""
    try:
        result = recognizer.predict(data, tta=tta, name=name)
    except ImageError as e:
        raise HTTPException(422, str(e)) from e
    return prediction(recognizer, result, tta, threshold)


def predict_many(recognizer: Recognizer, uploads: list[tuple[str, bytes]], tta: str,
                 threshold: float | None) -> list[dict]:
    """Each upload's prediction, or ``{"source", "error"}`` for one that is not a usable image; faces classified
    together."""
    entries: list[Any] = []
    for name, data in uploads:
        try:
            entries.append((name, read_image(data, name=name)))
        except ImageError as e:
            entries.append({"source": name, "error": str(e)})
    decoded = [entry for entry in entries if isinstance(entry, tuple)]
    results = iter(recognizer.predict_batch([image for _, image in decoded], tta=tta,
                                            names=[name for name, _ in decoded]))
    return [prediction(recognizer, next(results), tta, threshold) if isinstance(entry, tuple) else entry
            for entry in entries]


async def request_image(request: Request) -> tuple[str, bytes]:
    """(name, bytes) of the image: the multipart field ``file``, else the raw body; HTTPException 400 when neither."""
    if request.headers.get("content-type", "").startswith(MULTIPART):
        async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS) as form:
            file = form.get("file")
            if not isinstance(file, FormFile):  # a text field of that name, or none
                raise HTTPException(400, "a multipart body needs the image in its field 'file'")
            return file.filename or "file", await file.read()
    data = await request.body()
    if not data:
        raise HTTPException(400, "no image: send it as the multipart field 'file' or as the raw request body")
    return RAW_BODY_NAME, data


# --- the app -----------------------------------------------------------------------------------


def model_entries() -> dict[str, dict]:
    """``GET /v1/models``: each bundled model's classes, architecture, SHA-256 and accuracy (when the manifest
    has it)."""
    entries = read_manifest()["models"]
    return {name: {"classes": e.get("classes"), "arch": e.get("arch"), "sha256": e["sha256"],
                   **({"accuracy": e["accuracy"]} if "accuracy" in e else {})} for name, e in entries.items()}


async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    """A request FastAPI cannot validate: 422 and its reasons on one line."""
    return JSONResponse({"detail": one_line(error)}, status_code=422)


def add_predict_routes(app: FastAPI, default_model: Enum, models: Models,
                       in_thread: Callable[..., Awaitable[Any]]) -> None:
    """``POST /v1/predict`` and ``POST /v1/predict/batch``, their blocking work run through ``in_thread``."""
    Model = type(default_model)  # the bundled models' enum, which FastAPI reads from the endpoints' annotations
    threshold_query = Query(None, ge=0.0, le=1.0, description="mark a face unsure below this top probability "
                                                               "(default: the model's own)")
    model_query = Query(default_model, description=f"a bundled model (default: {default_model.value})")
    tta_query = Query(Tta("none"), description="test-time augmentation: none, flip (2 views) or crops (10 views)")

    @app.post("/v1/predict", openapi_extra=PREDICT_BODY)
    async def predict(request: Request, model: Model = model_query, tta: Tta = tta_query,
                      threshold: float | None = threshold_query) -> dict:
        """The faces of one image, sent as the multipart field ``file`` or as the raw body: ``{"model",
        "model_sha256", "tta", "source", "width", "height", "faces": [{"box": {"x", "y", "w", "h"},
        "dominant_emotion", "confidence", "emotions", "unsure", "detection_score"}]}``."""
        name, data = await request_image(request)
        recognizer = await in_thread(models.get, model.value)
        return await in_thread(predict_one, recognizer, data, name, tta.value, threshold)

    @app.post("/v1/predict/batch")
    async def predict_batch(files: Annotated[list[UploadFile], File(description=f"up to {MAX_BATCH_FILES} images")],
                            model: Model = model_query, tta: Tta = tta_query,
                            threshold: float | None = threshold_query) -> dict:
        """``{"model", "model_sha256", "results": [...]}``: each file's prediction as /v1/predict gives it, or
        ``{"source", "error"}`` for a file that is not a usable image."""
        if len(files) > MAX_BATCH_FILES:
            raise HTTPException(422, f"{len(files)} files: at most {MAX_BATCH_FILES} per request")
        uploads = [(f.filename or f"file {i}", await f.read()) for i, f in enumerate(files, start=1)]
        recognizer = await in_thread(models.get, model.value)
        results = await in_thread(predict_many, recognizer, uploads, tta.value, threshold)
        return {"model": recognizer.name, "model_sha256": recognizer.sha256, "results": results}


def add_info_routes(app: FastAPI, default_model: str, bundled: dict[str, dict], models: Models) -> None:
    """``GET /v1/models`` and ``GET /healthz``."""

    @app.get("/v1/models")
    def list_models() -> dict:
        """The bundled models: classes, architecture, SHA-256, accuracy when measured; which one is the default."""
        return {"default": default_model, "models": bundled}

    @app.get("/healthz")
    def healthz() -> dict:
        """``{"status": "ok"}`` once the default model is loaded, with the models this worker holds."""
        return {"status": "ok", "loaded": models.names()}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app of one worker."""
    settings = settings or Settings()
    bundled = model_entries()
    Model = Enum("Model", {name: name for name in bundled}, type=str)
    default_model = Model(settings.model)
    models = Models(settings.threads)

    limiter: CapacityLimiter | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal limiter
        limiter = CapacityLimiter(settings.concurrency)  # made in the worker's event loop
        models.get(settings.model)  # a broken default model stops the worker now, not at its first request
        yield

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a worker thread, at most ``settings.concurrency`` at a time."""
        return await to_thread.run_sync(fn, *args, limiter=limiter)

    app = FastAPI(title="ferkit", version=__version__, lifespan=lifespan,
                  description="Faces in images and their emotions (FER2013 / FER+ models, ONNX Runtime on the CPU).")
    app.add_middleware(BodyLimit, max_bytes=settings.max_bytes)
    app.add_exception_handler(RequestValidationError, invalid_request)
    add_predict_routes(app, default_model, models, in_thread)
    add_info_routes(app, settings.model, bundled, models)
    return app


def app_from_env() -> FastAPI:
    """The app as uvicorn's workers build it (``ferkit.service:app_from_env``, a factory): Settings.from_env()."""
    return create_app(Settings.from_env())


# --- the command --------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    env = Settings.from_env()
    p = argparse.ArgumentParser("ferkit serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on; 0.0.0.0 exposes the service to the network (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes, each with its own models (default: 1)")
    p.add_argument("--model", default=env.model,
                   help=f"the bundled model used when a request names none, loaded at start-up "
                        f"({env_name('model')}; default: {env.model})")
    p.add_argument("--max-bytes", type=positive_int, default=env.max_bytes,
                   help=f"largest request body accepted, in bytes ({env_name('max_bytes')}; default: {env.max_bytes})")
    p.add_argument("--threads", type=positive_int, default=env.threads,
                   help=f"ONNX Runtime threads per model per worker ({env_name('threads')}; default: {env.threads})")
    p.add_argument("--concurrency", type=positive_int, default=env.concurrency,
                   help="predictions one worker runs at once, each on its own thread; more requests wait their turn "
                        f"({env_name('concurrency')}; default: {env.concurrency}, the usable CPUs)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default: info)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    bundled = read_manifest()["models"]
    if args.model not in bundled:
        parser.error(f"--model {args.model!r}: not a bundled model (choose one of {', '.join(bundled)})")
    os.environ.update(Settings(args.model, args.max_bytes, args.threads, args.concurrency).to_env())
    uvicorn.run("ferkit.service:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level)
    return 0
