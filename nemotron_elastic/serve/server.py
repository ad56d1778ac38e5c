# SPDX-License-Identifier: Apache-2.0
"""The OpenAI-compatible HTTP server (standard library `http.server`, one thread per connection).

    GET  /health                 status, queue counters, memory (weights once, live caches, RSS)
    GET  /metrics                Prometheus text: queue depth, running requests per budget, tokens/s, TTFT
    GET  /v1/models[/ID]         the served models: NAME (parent) and NAME-<budget> per trained budget
    POST /v1/completions         OpenAI completions, `stream: true` for server-sent events
    POST /v1/chat/completions    OpenAI chat completions (the tokenizer's chat template, if any)

Any other method gets a JSON error, as every error here does: 405 on these paths (a HEAD answer without its
body), 404 elsewhere, and http.server's own errors (unknown method, malformed request line) via `send_error`.

A connection thread validates the request (4xx JSON errors, `openai_schema.py`), then hands generation to
the bounded `WorkerPool` (429 when full) and relays the engine's events (`handlers.RelayMixin`): as SSE chunks
(`data: {...}\\n\\n` ... `data: [DONE]\\n\\n`) or as one JSON answer. While it waits it watches its socket;
a client that goes away cancels its job, which frees the worker after the current decoding step.

With an API key (`--api-key` or NEMOTRON_ELASTIC_API_KEY, as vLLM's and llama.cpp's servers) every `/v1/`
route needs `Authorization: Bearer <key>` (else 401 with an OpenAI-style error); /health and /metrics stay
open, for load balancers and scrapers.
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .engine import ContextLengthError, ManyInOneEngine
from .handlers import GenerationCall, RelayMixin, prepare_call
from .metrics import MeteredSink, ServeMetrics
from .model_table import UnknownModelError
from .openai_schema import APIError
from .responses import model_card
from .scheduler import QueueFullError, ShuttingDownError, WorkerPool

MAX_BODY_BYTES = 8 * 1024 * 1024


class _HTTPServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections (16 clients that each open one
    # per request) overflows it, and the kernel drops the SYNs, which clients resend only after 1 s (p95
    # latency 2.1 s instead of 0.7 s at 16 concurrent requests: benchmarks/http_stack.py). uvicorn uses 2048.
    request_queue_size = 2048
    daemon_threads = True


class ElasticServer:
    """The server around one engine. `start()` serves in a background thread; `serve_forever()` blocks.

    Args:
        engine: the loaded ManyInOneEngine.
        host, port: where to listen (port 0: any free port; see `url`).
        max_concurrency: requests generating at once (worker threads).
        max_queue: requests that may wait for a worker; beyond that 429.
        quiet: no access log on stderr.
        api_key: required as `Authorization: Bearer <key>` on /v1/ routes (None: open).
    """

    def __init__(
        self,
        engine: ManyInOneEngine,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_concurrency: int = 2,
        max_queue: int = 16,
        quiet: bool = False,
        api_key: str | None = None,
    ) -> None:
        if api_key is not None and not api_key.strip():
            raise ValueError("--api-key: empty")
        self.engine, self.quiet, self.api_key = engine, quiet, api_key
        self.metrics = ServeMetrics()
        self.pool = WorkerPool(max_concurrency, max_queue)
        self.created = int(time.time())
        self.closing = False
        self._handlers = 0
        self._handlers_lock = threading.Lock()
        self.httpd = _HTTPServer((host, port), _Handler)
        self.httpd.app = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """http://HOST:PORT actually bound (the real port when 0 was asked for)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Accept connections until `shutdown()`."""
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ElasticServer:
        """Serve in a background thread; returns self (tests, benchmarks, `serve_main`)."""
        self._thread = threading.Thread(target=self.serve_forever, name="serve-http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, let running requests finish for `grace` s, cancel the rest, close the socket."""
        self.closing = True
        self.httpd.shutdown()  # returns once serve_forever's loop has exited: no new connections
        self.pool.shutdown(grace)
        deadline = time.monotonic() + 2.0
        while self._handlers and time.monotonic() < deadline:  # let handlers write their last chunk
            time.sleep(0.02)
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of GET /health: status, served models, queue counters, memory report."""
        status = "shutting_down" if self.closing else "ok"
        body = {
            "status": status,
            "models": list(self.engine.models),
            "queue": self.pool.stats(),
            "memory": self.engine.memory_report(),
        }
        return (503 if self.closing else 200), body

    def models(self) -> dict[str, Any]:
        """The body of GET /v1/models."""
        cards = [model_card(m, self.created, self.engine.name) for m in self.engine.models.values()]
        return {"object": "list", "data": cards}


class _Handler(RelayMixin, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for JSON answers; streams close the connection at the end
    server_version = "nemotron-elastic"
    # TCP_NODELAY: an answer is written as headers, then body (then SSE chunks); with Nagle's algorithm the
    # second small write waits for the ACK of the first, which the client delays by up to 40 ms. Every
    # keep-alive JSON answer took ~50 ms longer (benchmarks/http_stack.py, docs/SERVING.md "HTTP stack").
    disable_nagle_algorithm = True
    timeout = 120  # seconds a socket read / write may block: idle keep-alive connections and stalled
    # clients release their thread (a streaming client that stops reading is cancelled when a write times out)

    @property
    def app(self) -> ElasticServer:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """One access-log line on stderr, unless the server is quiet."""
        if not self.app.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    # --- plumbing ------------------------------------------------------------------------------------------
    def _send_json(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_body(status, json.dumps(obj).encode(), "application/json", headers)

    def _send_text(self, status: int, text: str, content_type: str) -> None:
        self._send_body(status, text.encode(), content_type)

    def _send_body(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has the headers of its body, never the body itself
            self.wfile.write(data)

    def _send_error(self, err: APIError) -> None:
        self._send_json(err.status, err.body(), err.headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (an unknown method: 501, a malformed request line: 400, an over-long
        URI or header: 414 / 431) as OpenAI JSON error objects instead of its HTML page."""
        self.close_connection = True  # the request could not be parsed: nothing after it can be trusted
        try:
            short = self.responses[code][0]
        except KeyError:
            short = "error"
        kind = "server_error" if code >= 500 else "invalid_request_error"
        self.log_error("code %d, message %s", code, message or short)
        self._send_error(APIError(code, message or short, type=kind))

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True  # the body (if any) cannot be skipped reliably
            raise APIError(411, "Content-Length header required (a JSON body)")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise APIError(413, f"request body of {int(length)} bytes exceeds {MAX_BODY_BYTES}")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise APIError(400, f"request body: invalid JSON ({err})") from None
        except RecursionError:  # json's parser recurses once per nesting level: `[[[...]]]` deeper than the
            # interpreter's recursion limit (about 1000) is refused, as no request needs a tenth of that
            raise APIError(400, "request body: JSON nested too deeply") from None

    # --- routing -------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # other methods get a JSON 405 (known path) / 404, not http.server's HTML 501 (see also send_error)
    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def do_HEAD(self) -> None:  # the same status and headers, no body (_send_body)
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        app = self.app
        with app._handlers_lock:
            app._handlers += 1
        try:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            self._authorize(path)
            self._route(method, path)
        except APIError as err:
            self._send_error_quietly(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # noqa: BLE001  a bug must not take the server down: 500, keep serving
            self.close_connection = True
            message = f"internal error: {type(err).__name__}: {' '.join(str(err).split())}"
            self._send_error_quietly(APIError(500, message, type="server_error"))
        finally:
            with app._handlers_lock:
                app._handlers -= 1

    def _authorize(self, path: str) -> None:
        """401 for a /v1/ route without the server's key (compared in constant time)."""
        key = self.app.api_key
        if key is None or not path.startswith("/v1"):
            return
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            self.close_connection = True  # the body we will not read may follow
            what = "Incorrect API key provided" if given else "Missing API key (Authorization: Bearer <key>)"
            raise APIError(401, what, type="invalid_request_error", code="invalid_api_key")

    def _send_error_quietly(self, err: APIError) -> None:
        """Answer an error; a client already gone is not an error of ours."""
        try:
            self._send_error(err)
        except OSError:
            self.close_connection = True

    def _route(self, method: str, path: str) -> None:
        gets = {"/health", "/metrics", "/v1/models"}
        posts = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}
        if method == "GET" and path == "/health":
            status, body = self.app.health()
            return self._send_json(status, body)
        if method == "GET" and path == "/metrics":
            return self._send_text(200, self.app.metrics.render(self.app.pool.stats()),
                                   "text/plain; version=0.0.4; charset=utf-8")
        if method == "GET" and path == "/v1/models":
            return self._send_json(200, self.app.models())
        if method == "GET" and path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            served = self.app.engine.models.get(name)
            if served is None:
                raise APIError(
                    404, f"The model '{name}' does not exist", param="model", code="model_not_found"
                )
            return self._send_json(200, model_card(served, self.app.created, self.app.engine.name))
        if method == "POST" and path in posts:
            return self._generate(posts[path])
        allowed = "GET" if path in gets or path.startswith("/v1/models/") else None
        allowed = "POST" if path in posts else allowed
        if allowed is not None:
            self.close_connection = True  # a body we did not read may follow
            message, allow = f"{method} is not allowed on {path}", {"Allow": allowed}
            raise APIError(405, message, code="method_not_allowed", headers=allow)
        raise APIError(404, f"no route {method} {path}", code="not_found")

    # --- generation ----------------------------------------------------------------------------------------
    def _generate(self, kind: str) -> None:
        body = self._read_json()
        app = self.app
        if app.closing:
            raise APIError(503, "the server is shutting down", type="server_error")
        try:
            call = prepare_call(app.engine, kind, body)
        except UnknownModelError as err:
            raise APIError(404, str(err), param="model", code="model_not_found") from None
        except ContextLengthError as err:
            raise APIError(
                400,
                str(err),
                param="messages" if kind == "chat" else "prompt",
                code="context_length_exceeded",
            ) from None
        try:
            job = app.pool.submit(lambda job: _run(app.engine, call, job, app.metrics))
        except QueueFullError as err:
            raise APIError(429, str(err), type="rate_limit_error", code="queue_full") from None
        except ShuttingDownError as err:
            raise APIError(503, str(err), type="server_error") from None
        if call.request.stream:
            self._relay_stream(call, job)
        else:
            self._relay_whole(call, job)


def _run(engine: ManyInOneEngine, call: GenerationCall, job: Any, metrics: ServeMetrics) -> None:
    """A worker's part: hold a slot while the request decodes. Its events go from the decoding thread
    straight to the handler's queue (one hop per token: `request_stream.py`); an exception that ended it
    is raised here, so the pool records it as the job's error."""
    model = call.served.name
    metrics.started(model, len(call.prompt_ids))
    try:
        sink = MeteredSink(job.events, metrics, model, hold=not call.request.stream)
        stream = engine.start(call.prompt_ids, call.served, call.params, sink, cancel=job.cancel)
        stream.finished.wait()
        if stream.error is not None:
            raise stream.error
    finally:
        metrics.finished(model)
