"""`llava15 serve`: one process, an OpenAI-compatible HTTP API and the static web UI.

Contract:
- `create_app(engine, model_name, limits, api_key=None, max_batch_size=8) -> FastAPI` with
  `POST /v1/chat/completions` (JSON or `stream: true` server-sent events), `GET /v1/models`,
  `GET /health`, and the web UI at `/` (`index.html`, `app.js`).
- Requests are parsed, their images decoded and their prompts built in a thread pool, so every bad
  request is answered with a 4xx in OpenAI's error shape before it reaches the model. Valid requests go
  to one `BatchWorker` thread, which takes whatever is waiting (up to `max_batch_size`) and runs it as
  one batch through `Engine.run`, each row with its own decoding settings; deltas travel back to the
  request's asyncio queue. A full queue answers 429.
- `run_serve(args)`: binds the port first (a taken port is an error before anything loads), loads the
  checkpoint and serves it with uvicorn until interrupted, as `--served-model-name` (default: the
  checkpoint's folder name); the API key comes from `--api-key` or the `LLAVA15_API_KEY` environment
  variable (not visible in the process list); `--max-request-bytes`, `--max-image-bytes` and
  `--max-image-pixels` set the `Limits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llava15.infer.decoding import DecodingParams
from llava15.infer.engine import Engine, Event, GenerationError, Prepared
from llava15.infer.protocol import (
    APIError,
    Limits,
    chunk_body,
    completion_body,
    parse_request,
    to_conversation,
    usage,
)

log = logging.getLogger(__name__)
WEBUI = Path(__file__).parent / "webui"
API_KEY_ENV = "LLAVA15_API_KEY"


@dataclass
class Job:
    prepared: Prepared
    params: DecodingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def put(self, item: Event | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class BatchWorker:
    """One thread owns the model; concurrent requests waiting at the same time share a batch."""

    def __init__(self, engine: Engine, max_batch_size: int = 8, max_queue: int = 256,
                 gather_s: float = 0.004) -> None:
        self.engine, self.max_batch_size, self.gather_s = engine, max_batch_size, gather_s
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.batches = 0  # batches run so far, and the largest one (reported by /health)
        self.largest_batch = 0
        self.thread = threading.Thread(target=self._loop, name="llava15-batch-worker", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise APIError(429, "the server is busy (request queue full); retry later",
                           type="server_busy", code="queue_full") from None

    def stop(self) -> None:
        self.jobs.put(None)

    def _loop(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch_size:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)
                    break
                batch.append(job)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            for events in self.engine.run([j.prepared for j in batch], [j.params for j in batch]):
                for ev in events:
                    batch[ev.row].put(ev)
                if all(j.cancelled for j in batch):
                    break
        except Exception as exc:  # a model failure fails this batch, never the server
            log.exception("generation failed for a batch of %d", len(batch))
            for j in batch:
                j.put(exc)


def create_app(engine: Engine, model_name: str, limits: Limits, api_key: str | None = None,
               max_batch_size: int = 8) -> FastAPI:
    worker = BatchWorker(engine, max_batch_size=max_batch_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.stop()

    app = FastAPI(title="llava15", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    prepare_lock = threading.Lock()
    context = getattr(engine.model.config.get_text_config(), "max_position_embeddings", None)
    app.state.worker = worker

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = APIError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}", type="server_error").body(),
                            status_code=500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_request_bytes:
            raise APIError(413, f"request body is {declared} bytes; the limit is {limits.max_request_bytes}",
                           code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_request_bytes:
                raise APIError(413, f"request body exceeds {limits.max_request_bytes} bytes",
                               code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def fetch(url: str) -> bytes:
        try:
            async with httpx.AsyncClient(timeout=10.0, follow_redirects=True) as client:
                async with client.stream("GET", url) as resp:
                    if resp.status_code != 200:
                        raise APIError(400, f"fetching {url[:80]} returned HTTP {resp.status_code}",
                                       code="image_fetch_failed")
                    data = bytearray()
                    async for part in resp.aiter_bytes():
                        data += part
                        if len(data) > limits.max_image_bytes:
                            raise APIError(400, f"{url[:80]} is larger than {limits.max_image_bytes} bytes",
                                           code="image_too_large")
                    return bytes(data)
        except httpx.HTTPError as exc:
            raise APIError(400, f"could not fetch {url[:80]}: {type(exc).__name__}",
                           code="image_fetch_failed") from None

    def prepare(messages: list, images: list) -> Prepared:
        with prepare_lock:
            try:
                return engine.prepare(messages, images)
            except GenerationError as exc:
                raise APIError(400, str(exc), param="messages") from None
            except (ValueError, OSError) as exc:  # image files PIL cannot turn into pixels
                raise APIError(400, f"could not prepare the request: {exc}", param="messages") from None

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "queued": worker.jobs.qsize(), "batches": worker.batches,
                "largest_batch": worker.largest_batch}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_key(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "llava15"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_key(request)
        req = parse_request(await read_body(request), limits)
        if req.model != model_name:
            raise APIError(404, f"model {req.model!r} is not served here; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        messages, images, params = await to_conversation(req, limits, fetch)
        prepared = await run_in_threadpool(prepare, messages, images)
        if context is not None and len(prepared.ids) + params.max_new_tokens > context:
            raise APIError(400, f"prompt ({len(prepared.ids)} tokens, images included) + max_tokens "
                           f"({params.max_new_tokens}) exceeds the model's context of {context} tokens",
                           param="messages", code="context_length_exceeded")
        job = Job(prepared, params, asyncio.get_running_loop())
        worker.submit(job)
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse(job, rid, model_name, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                ev = await job.queue.get()
                if isinstance(ev, BaseException):
                    raise APIError(500, f"generation failed: {type(ev).__name__}", type="server_error")
                if ev.finished:
                    return completion_body(rid, model_name, ev.text or "", ev.finish_reason or "stop",
                                           ev.prompt_tokens, ev.completion_tokens)
        finally:
            job.cancelled = True

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(WEBUI / "index.html", media_type="text/html")

    @app.get("/app.js")
    async def app_js() -> FileResponse:
        return FileResponse(WEBUI / "app.js", media_type="text/javascript")

    return app


async def _sse(job: Job, rid: str, model: str, include_usage: bool):
    def line(body: dict) -> str:
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield line(chunk_body(rid, model, {"role": "assistant", "content": ""}))
        while True:
            ev = await job.queue.get()
            if isinstance(ev, BaseException):
                err = APIError(500, f"generation failed: {type(ev).__name__}", type="server_error")
                yield line(err.body())
                break
            if ev.delta:
                yield line(chunk_body(rid, model, {"content": ev.delta}))
            if ev.finished:
                yield line(chunk_body(rid, model, {}, ev.finish_reason))
                if include_usage:
                    yield line(chunk_body(rid, model, {}, usage_=usage(ev.prompt_tokens, ev.completion_tokens),
                                          choices=False))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled = True


def run_serve(args: Any) -> int:
    """Bind the port, load the checkpoint, serve until interrupted (args from `llava15.cli._serve`)."""
    import os

    import uvicorn

    from llava15.infer.engine import load_generation_bundle
    from llava15.model.preflight import bind_port

    sock = bind_port(args.host, args.port)  # a taken port is named now, not after the model has loaded
    limits = Limits(max_tokens=args.max_tokens_limit, allowed_image_dir=args.allowed_image_dir,
                    allow_remote_images=args.allow_remote_images, max_request_bytes=args.max_request_bytes,
                    max_image_bytes=args.max_image_bytes, max_image_pixels=args.max_image_pixels)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    name = getattr(args, "served_model_name", None) or Path(str(args.model).rstrip("/")).name or str(args.model)
    bundle = load_generation_bundle(args.model, device=args.device, quantize=getattr(args, "quantize", None),
                                    fast_decode=False if getattr(args, "eager", False) else None)
    options = dict(bundle.decode_options or {})  # on CUDA: compiled decode step + CUDA graphs unless --eager
    options["compile_decode"] = options.get("compile_decode", False) or bool(getattr(args, "compile", False))
    engine = Engine(bundle, **options)
    app = create_app(engine, name, limits, api_key=api_key, max_batch_size=args.max_batch_size)
    auth = "bearer key required" if api_key else f"no API key (set {API_KEY_ENV} to require one)"
    print(f"llava15 serve: model {name!r} on http://{args.host}:{args.port} (web UI at /; {auth})", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0
