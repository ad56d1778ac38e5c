# SPDX-License-Identifier: Apache-2.0
"""RequestStream: one request's token events turned into text events, on the decoding loop's thread.

The decoding loop (`decode_loop.py`) hands every TokenEvent of a request to its RequestStream (`put`),
which turns it into StreamEvents right there: incremental detokenization, stop token ids (counted, not
text), stop strings (cut from the text; the row leaves the batch at the next step), the caller's cancel,
and the request's stats. The StreamEvents go to `sink` (anything with `put`): the HTTP handler's queue, so
a token reaches the thread that writes it to the client in one hop, or the queue `engine.stream` reads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..model.batcher import TokenEvent
from ..subnet.cost import predicted_cache_bytes
from .text import IncrementalDetokenizer, StopMatcher


@dataclass
class GenerationStats:
    """What one request used: tokens, measured and predicted cache bytes, wall time."""

    model: str
    budget: float
    prompt_tokens: int
    completion_tokens: int = 0
    cache_bytes: int = 0
    predicted_cache_bytes: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None


@dataclass
class StreamEvent:
    """One step of a stream: new text (may be empty) and token ids; the last event has a finish_reason
    ("stop", "length" or "cancelled") and the stats."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    stats: GenerationStats | None = None


class RequestStream:
    """Args:
        engine: the ManyInOneEngine (its tokenizer's `decode`, dtype).
        served: the ServedModel the request runs.
        params: its SamplingParams.
        stats: the GenerationStats to fill (model, budget, prompt tokens set).
        stops: token ids that end the request (EOS unless ignored, and the request's stop ids).
        sink: where the StreamEvents go (`sink.put(event)`); an exception of the step goes there too.
        external: the caller's cancel event (set: the request ends "cancelled", later tokens dropped).
    `cancel` is the row's own cancel (set on a stop string or by `close`); `finished` is set after the
    last event went to the sink; `error` holds an exception that ended the request.
    """

    def __init__(self, engine: Any, served: Any, params: Any, stats: Any, stops: frozenset[int], sink: Any,
                 external: threading.Event | None = None) -> None:
        self.engine, self.served, self.stats, self.stops, self.sink = engine, served, stats, stops, sink
        self.external = external
        self.detok, self.matcher = IncrementalDetokenizer(engine.decode), StopMatcher(params.stop)
        self.cancel, self.finished = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.start, self.finish, self.tail_ids = time.perf_counter(), None, []

    def put(self, event: TokenEvent | BaseException) -> None:
        """One event of the decoding loop (called on its thread)."""
        if self.finished.is_set():
            return
        if isinstance(event, BaseException):
            self.error = event
            try:
                self.sink.put(event)
            finally:  # even a sink that fails here must not leave its owner waiting
                self.finished.set()
            return
        if self.finish is None and self.external is not None and self.external.is_set():
            self.finish = "cancelled"  # tokens decoded after the caller cancelled are dropped
        if event.token is not None and self.finish is None:  # tokens after a stop string are dropped
            self._token(event.token)
        if event.finish is not None:
            self._end(event)

    def _token(self, token: int) -> None:
        stats = self.stats
        stats.completion_tokens += 1
        if stats.first_token_seconds is None:
            stats.first_token_seconds = time.perf_counter() - self.start
        if token in self.stops:  # EOS / stop id: counted, but not part of the text
            self.tail_ids = [token]
            return
        text, stopped = self.matcher.feed(self.detok.push(token))
        self.sink.put(StreamEvent(text, [token]))
        if stopped:  # a stop string: the row leaves at the next step
            self.finish = "stop"
            self.cancel.set()

    def _end(self, event: TokenEvent) -> None:
        matcher = self.matcher
        tail = "" if matcher.stopped else matcher.feed(self.detok.flush())[0] + matcher.flush()
        stats = self.stats
        stats.seconds = time.perf_counter() - self.start
        stats.cache_bytes = event.cache_bytes
        stats.predicted_cache_bytes = predicted_cache_bytes(self.served.spec, event.seen, self.engine.dtype)
        self.sink.put(StreamEvent(tail, self.tail_ids, self.finish or event.finish, stats))
        self.finished.set()

    def close(self) -> None:
        """The consumer is gone: the row leaves the batch at the next step."""
        self.cancel.set()
