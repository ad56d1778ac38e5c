# SPDX-License-Identifier: Apache-2.0
"""Relaying a generation job to its HTTP client: server-sent events or one JSON answer, and noticing a
client that went away.

A mixin of the request handler (`server.py`): the handler's thread reads the job's events from its queue
(`scheduler.Job.events`, ended by None) and writes them out. Between events it checks its socket every
POLL_SECONDS: a peer that closed its end makes the socket readable with zero bytes pending. Then the job is
cancelled, which stops the engine after the current decoding step and frees the worker. A streamed answer
also notices a lost client when a write fails (BrokenPipe / ConnectionReset / the socket timeout).

SSE framing follows the OpenAI API: `data: {json}\\n\\n` per chunk, `data: [DONE]\\n\\n` at the end; the
response has no Content-Length and the connection closes after [DONE].
"""

from __future__ import annotations

import json
import queue
import select
import socket
import time
from typing import Any

from .handlers import GenerationCall
from .openai_schema import APIError

POLL_SECONDS = 0.2  # how often a waiting handler checks that its client is still connected
_NOTHING = object()  # "no event yet" (None is the end of a job's events)


class RelayMixin:
    """Methods of the request handler that relay a job (uses `connection`, `wfile`, `send_*`)."""

    _checked = 0.0  # monotonic time of the last client_gone() check
    connection: socket.socket
    wfile: Any
    close_connection: bool

    def client_gone(self) -> bool:
        """True when the peer closed its end (readable with zero bytes pending) or the socket failed."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _next_event(self, job: Any) -> Any:
        """The job's next event (None at its end); cancels the job and returns False if the client has
        disconnected. The socket is checked every POLL_SECONDS, also while events keep coming (a
        non-streamed answer writes nothing until it is complete, so a write cannot reveal a lost client)."""
        while True:
            try:
                event = job.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                event = _NOTHING
            now = time.monotonic()
            if now - self._checked >= POLL_SECONDS:
                self._checked = now
                if self.client_gone():
                    job.cancel.set()
                    self.close_connection = True
                    return False
            if event is not _NOTHING:
                return event

    def _relay_whole(self, call: GenerationCall, job: Any) -> None:
        while (event := self._next_event(job)) is not None:
            if event is False:
                return
            call.add(event)
        if job.error is not None:
            raise job.error
        self._send_json(200, call.whole())

    def _relay_stream(self, call: GenerationCall, job: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True
        try:
            self._write_sse(call.first_chunks())
            while (event := self._next_event(job)) is not None:
                if event is False:
                    return
                self._write_sse(call.chunks(event))
                if self.client_gone():
                    raise BrokenPipeError("client closed the stream")
            if job.error is not None:
                message = f"generation failed: {type(job.error).__name__}: {job.error}"
                self._write_sse([APIError(500, message, type="server_error").body()])
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # BrokenPipe / ConnectionReset: stop generating, free the worker
            job.cancel.set()

    def _write_sse(self, objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        if objects:
            self.wfile.flush()
