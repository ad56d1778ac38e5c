# SPDX-License-Identifier: Apache-2.0
"""The FastAPI + uvicorn variant of the serving HTTP layer, for benchmarks/http_stack.py only (not shipped:
the package serves with the standard library, docs/SERVING.md "HTTP stack").

It puts the same engine behind the same OpenAI surface the benchmark exercises (`/health`, `/v1/models[/ID]`,
`/v1/completions`, `/v1/chat/completions`, streamed and not) and reuses every piece of the shipped server
that is not HTTP: request validation (`handlers.prepare_call`), the bounded `WorkerPool` (429 when full),
the answer and chunk builders (`GenerationCall`) and the error objects (`APIError`, `handlers.failure`).
So the benchmark compares the HTTP layers alone.

The bridge from the engine's threads to the event loop is the usual one (vLLM's AsyncLLM output handler
does the same): the decoding thread hands each text event to the request's asyncio.Queue
with `loop.call_soon_threadsafe`; the handler awaits that queue, so no event-loop thread ever blocks on
decoding. Tokenisation in `prepare_call` runs inline on the loop: it is short next to a decoding step,
and a hop to a thread pool would add its own latency to every request.

    python benchmarks/_fastapi_app.py --model DIR [--threads 1 --max-concurrency 16 --max-queue 16]

prints `listening on http://127.0.0.1:PORT` once the socket listens (as `nemotron-elastic serve` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nemotron_elastic.serve.engine import ContextLengthError, ManyInOneEngine
from nemotron_elastic.serve.handlers import POLL_SECONDS, GenerationCall, failure, prepare_call
from nemotron_elastic.serve.model_table import UnknownModelError
from nemotron_elastic.serve.openai_schema import APIError
from nemotron_elastic.serve.responses import model_card
from nemotron_elastic.serve.scheduler import QueueFullError, ShuttingDownError, WorkerPool
from nemotron_elastic.serve.server import MAX_BODY_BYTES

_STARTED, _END = object(), object()  # queue markers: the job runs; the job's events are over
_GONE = object()  # what _next returns when the client has disconnected (its job is cancelled then)


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    # json.dumps as the stdlib server does (FastAPI's JSONResponse differs only in separators)
    return Response(json.dumps(obj).encode(), status, headers, media_type="application/json")


def _error(err: APIError) -> Response:
    return _json(err.status, err.body(), err.headers)


def build_app(engine: ManyInOneEngine, max_concurrency: int = 16, max_queue: int = 16) -> FastAPI:
    """A FastAPI app serving `engine` with the shipped server's validation, pool and answers."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    pool = WorkerPool(max_concurrency, max_queue)
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> Response:
        return _error(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        # Starlette's routing errors (404 unknown path, 405 other method) as OpenAI error objects
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return _error(APIError(err.status_code, f"{request.method} {request.url.path}: {err.detail}",
                               code=code, headers=dict(err.headers or {})))

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> Response:
        return _error(APIError(500, f"internal error: {type(err).__name__}: {err}", type="server_error"))

    @app.get("/health")
    async def health() -> Response:
        body = {"status": "ok", "models": list(engine.models), "queue": pool.stats(),
                "memory": engine.memory_report()}
        return _json(200, body)

    @app.get("/v1/models")
    async def models() -> Response:
        cards = [model_card(m, created, engine.name) for m in engine.models.values()]
        return _json(200, {"object": "list", "data": cards})

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> Response:
        served = engine.models.get(name)
        if served is None:
            raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return _json(200, model_card(served, created, engine.name))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await generate(request, "chat")

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > MAX_BODY_BYTES:
            raise APIError(413, f"request body of {int(length)} bytes exceeds {MAX_BODY_BYTES}")
        raw = await request.body()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise APIError(400, f"request body: invalid JSON ({err})") from None
        except RecursionError:
            raise APIError(400, "request body: JSON nested too deeply") from None

    async def generate(request: Request, kind: str) -> Response:
        body = await read_json(request)
        try:
            call = prepare_call(engine, kind, body)
        except UnknownModelError as err:
            raise APIError(404, str(err), param="model", code="model_not_found") from None
        except ContextLengthError as err:
            param = "messages" if kind == "chat" else "prompt"
            raise APIError(400, str(err), param=param, code="context_length_exceeded") from None
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        class Sink:  # the decoding thread's text events straight onto the event loop (one hop, as stdlib)
            def put(self, event: Any) -> None:
                loop.call_soon_threadsafe(events.put_nowait, event)

        def work(job: Any) -> None:  # on a pool worker: hold the slot while the request decodes
            put = events.put_nowait
            loop.call_soon_threadsafe(put, _STARTED)
            try:
                stream = engine.start(call.prompt_ids, call.served, call.params, Sink(), cancel=job.cancel)
                stream.finished.wait()
                if stream.error is not None:
                    raise stream.error
            finally:
                loop.call_soon_threadsafe(put, _END)

        try:
            job = pool.submit(work)
        except QueueFullError as err:
            raise APIError(429, str(err), type="rate_limit_error", code="queue_full") from None
        except ShuttingDownError as err:
            raise APIError(503, str(err), type="server_error") from None
        try:
            if await _next(events, job, request) is _GONE:  # _STARTED: a stream's headers wait for its job
                return Response(status_code=499)  # nobody reads it: the client went away
        except BaseException:
            job.cancel.set()
            raise
        if call.request.stream:
            return StreamingResponse(_sse(call, job, events, request), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        error = None
        try:
            while (event := await _next(events, job, request)) is not _END:
                if event is _GONE:
                    return Response(status_code=499)
                if isinstance(event, BaseException):
                    error = event
                else:
                    call.add(event)
        except BaseException:
            job.cancel.set()
            raise
        if error is not None or not call.finished:
            raise failure(error)
        return _json(200, call.whole())

    app.state.pool = pool
    return app


async def _next(events: asyncio.Queue, job: Any, request: Request) -> Any:
    """The next queued item; every POLL_SECONDS without one, check that the client is still there (a
    non-streamed answer writes nothing until it is complete, so no write would notice)."""
    while True:
        try:
            async with asyncio.timeout(POLL_SECONDS):
                return await events.get()
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel.set()
                return _GONE
            if job.done.is_set() and not job.started.is_set():  # refused while queued
                raise failure(job.error) from None


def _sse_bytes(objects: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + json.dumps(obj).encode() + b"\n\n" for obj in objects)


async def _sse(call: GenerationCall, job: Any, events: asyncio.Queue, request: Request) -> AsyncIterator[bytes]:
    """Server-sent events, as the stdlib server writes them; a client that goes away cancels the job
    (Starlette cancels this generator when the client disconnects)."""
    error, finished = None, False
    try:
        if first := call.first_chunks():
            yield _sse_bytes(first)
        while (event := await _next(events, job, request)) is not _END:
            if event is _GONE:
                return
            if isinstance(event, BaseException):
                error = event
            elif data := _sse_bytes(call.chunks(event)):
                yield data
        if error is not None or not call.finished:
            yield _sse_bytes([failure(error).body()])
        yield b"data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            job.cancel.set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-concurrency", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--loop", default="auto", help="uvicorn event loop: auto (uvloop if installed) / asyncio")
    ap.add_argument("--http", default="auto", help="uvicorn HTTP parser: auto (httptools if installed) / h11")
    args = ap.parse_args()

    import torch
    import uvicorn

    torch.set_num_threads(args.threads)  # as `nemotron-elastic serve --threads`
    engine = ManyInOneEngine(args.model)
    app = build_app(engine, args.max_concurrency, args.max_queue)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections made before uvicorn's loop runs wait in the backlog
    config = uvicorn.Config(app, loop=args.loop, http=args.http, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        app.state.pool.shutdown(grace=1.0)
        engine.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
