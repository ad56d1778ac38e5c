# SPDX-License-Identifier: Apache-2.0
"""One generation request from validated JSON to answer: prompt ids, sampling parameters, the answer
(whole or as stream chunks). Independent of HTTP, so tests and benchmarks can use it directly.

`prepare_call(engine, kind, body)` does every check that needs the model (unknown model, token ids outside
the vocabulary, prompt + max_tokens beyond the context limit) before a worker is taken, so a bad request
never occupies a slot. `GenerationCall` then turns the engine's StreamEvents into OpenAI objects, and
`RelayMixin` writes them to the HTTP client (see its section below).
"""

from __future__ import annotations

import json
import queue
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from .engine import GenerationStats, ManyInOneEngine, SamplingParams, StreamEvent
from .model_table import ServedModel
from .openai_schema import APIError, GenerationRequest, bad, parse_chat_request, parse_completion_request
from .responses import ResponseIds, chat_completion, chunk, completion, usage_chunk
from .scheduler import ShuttingDownError

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


@dataclass
class GenerationCall:
    """A validated request bound to its served model, and the answer built from its events."""

    request: GenerationRequest
    served: ServedModel
    prompt_ids: list[int]
    params: SamplingParams
    ids: ResponseIds
    prompt_text: str = ""  # for `echo`
    pieces: list[str] = field(default_factory=list)
    finish_reason: str = "length"
    stats: GenerationStats | None = None

    @property
    def chat(self) -> bool:
        """True for /v1/chat/completions."""
        return self.request.kind == "chat"

    def add(self, event: StreamEvent) -> None:
        """Accumulate one engine event (non-streamed answers)."""
        self.pieces.append(event.text)
        if event.finish_reason is not None:
            self.finish_reason, self.stats = event.finish_reason, event.stats

    def text(self) -> str:
        """The answer so far (the echoed prompt first, when asked for)."""
        echo = self.prompt_text if self.request.echo else ""
        return echo + "".join(self.pieces)

    @property
    def finished(self) -> bool:
        """True once the event with the finish_reason (and the stats) was added."""
        return self.stats is not None

    def whole(self) -> dict[str, Any]:
        """The complete JSON answer, once every event was added."""
        assert self.finished, "the generation has not finished"
        build = chat_completion if self.chat else completion
        return build(self.ids, self.text(), self.finish_reason, self.stats)

    def first_chunks(self) -> list[dict[str, Any]]:
        """Chunks sent before any token: the chat role, or the echoed prompt."""
        if self.chat:
            return [chunk(self.ids, "", first=True)]
        return [chunk(self.ids, self.prompt_text)] if self.request.echo and self.prompt_text else []

    def chunks(self, event: StreamEvent) -> list[dict[str, Any]]:
        """The stream chunks of one engine event: its text, then (last event) finish_reason and usage."""
        out = [chunk(self.ids, event.text)] if event.text else []
        if event.finish_reason is not None:
            self.finish_reason, self.stats = event.finish_reason, event.stats
            out.append(chunk(self.ids, None if self.chat else "", event.finish_reason, event.stats))
            if self.request.include_usage and event.stats is not None:
                out.append(usage_chunk(self.ids, event.stats))
        return out


def _check_ids(ids: list[int], vocab: int, param: str) -> None:
    wrong = [i for i in ids if not 0 <= i < vocab]
    if wrong:
        raise bad(param, f"token id {wrong[0]} is outside the vocabulary [0, {vocab})")


def prepare_call(engine: ManyInOneEngine, kind: str, body: Any) -> GenerationCall:
    """Validate a completion (`kind="completion"`) or chat (`"chat"`) body against the engine.

    Raises:
        APIError: bad fields (400).
        UnknownModelError: the model is not served (the server answers 404).
        ContextLengthError: prompt + max_tokens exceed the context limit (400).
    """
    req = parse_completion_request(body) if kind == "completion" else parse_chat_request(body)
    served = engine.resolve(req.model)
    vocab = engine.config.vocab_size
    extra_stops: tuple[str, ...] = ()
    if req.kind == "chat":
        try:
            prompt_ids, extra_stops = engine.chat_prompt(req.messages or [])
        except ValueError as err:
            raise APIError(400, str(err), param="messages") from None
        prompt_text = ""
    elif isinstance(req.prompt, str):
        prompt_ids, prompt_text = engine.encode(req.prompt), req.prompt
    else:
        _check_ids(req.prompt or [], vocab, "prompt")
        prompt_ids = list(req.prompt or [])
        prompt_text = engine.decode(prompt_ids) if req.echo else ""
    if not prompt_ids:
        raise bad("prompt", "empty, and the tokenizer has no BOS token to start from")
    _check_ids(list(req.stop_token_ids), vocab, "stop_token_ids")
    max_tokens = req.max_tokens
    if max_tokens is None:  # OpenAI: 16 for completions; chat: whatever the context leaves
        max_tokens = (
            DEFAULT_COMPLETION_TOKENS if req.kind == "completion" else engine.max_context - len(prompt_ids)
        )
    engine.check_lengths(len(prompt_ids), max(1, max_tokens))
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        stop=req.stop + extra_stops,
        stop_token_ids=req.stop_token_ids,
        seed=req.seed,
        ignore_eos=req.ignore_eos,
    )
    return GenerationCall(req, served, prompt_ids, params, ResponseIds(req.kind, served.name), prompt_text)


# --- relay ---------------------------------------------------------------------------------------------
# Relaying a generation job to its HTTP client: server-sent events or one JSON answer, and noticing a
# client that went away.
#
# A mixin of the request handler (`server.py`): the handler's thread reads the job's events from its queue
# (`scheduler.Job.events`, ended by None) and writes them out. Between events it checks its socket every
# POLL_SECONDS: a peer that closed its end makes the socket readable with zero bytes pending. Then the job is
# cancelled, which stops the engine after the current decoding step and frees the worker. A streamed answer
# also notices a lost client when a write fails (BrokenPipe / ConnectionReset / the socket timeout).
#
# SSE framing follows the OpenAI API: `data: {json}\n\n` per chunk, `data: [DONE]\n\n` at the end; the
# response has no Content-Length and the connection closes after [DONE].
#
# A job can end without an answer: refused at shutdown while it waited (its error is a ShuttingDownError:
# 503, docs/SERVING.md), failed (500), or ended without a finish_reason (500). A stream sends its 200
# headers only once its job runs, so a refused stream still gets a plain 503; after the headers, any of
# these ends the stream with an error event, never a bare [DONE].
POLL_SECONDS = 0.2  # how often a waiting handler checks that its client is still connected
_NOTHING = object()  # "no event yet" (None is the end of a job's events)


def failure(error: BaseException | None) -> APIError:
    """The error answer of a job that ended without a finish_reason (`error`: what it raised, if anything)."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, ShuttingDownError):
        return APIError(503, str(error), type="server_error")
    if error is None:
        return APIError(500, "generation failed: it ended without a finish_reason", type="server_error")
    return APIError(500, f"generation failed: {type(error).__name__}: {error}", type="server_error")


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

    def _wait_for_start(self, job: Any) -> bool:
        """Wait while the job is queued: True once it runs or has ended; False if the client went away
        (the job is cancelled then)."""
        while not (job.started.wait(POLL_SECONDS) or job.done.is_set()):
            if self.client_gone():
                job.cancel.set()
                self.close_connection = True
                return False
        return True

    def _relay_whole(self, call: GenerationCall, job: Any) -> None:
        while (event := self._next_event(job)) is not None:
            if event is False:
                return
            call.add(event)
        if job.error is not None or not call.finished:
            raise failure(job.error)
        self._send_json(200, call.whole())

    def _relay_stream(self, call: GenerationCall, job: Any) -> None:
        if not self._wait_for_start(job):
            return
        if not job.started.is_set():  # ended while queued (refused at shutdown): no stream, a plain error
            raise failure(job.error)
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
            if job.error is not None or not call.finished:
                self._write_sse([failure(job.error).body()])
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # BrokenPipe / ConnectionReset: stop generating, free the worker
            job.cancel.set()

    def _write_sse(self, objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        if objects:
            self.wfile.flush()
