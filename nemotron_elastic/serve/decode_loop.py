# SPDX-License-Identifier: Apache-2.0
"""DecodeLoop: the serving engine's one decoding thread around the ContinuousBatcher (model/batcher.py).

Request threads (HTTP handlers, `engine.generate` callers) hand a `Ticket` to the loop and read its events
from `ticket.events`; the loop thread alone touches the batcher: it admits new tickets, turns set cancel
events into cancellations (the row leaves at that step), runs one `step()` and routes each TokenEvent to its
ticket. All requests in flight are therefore decoded together, one forward per active budget per step.

A failing step (an out-of-memory error, a bug) fails every request then in flight with that error and
starts over with an empty batcher; a request whose events cannot be handled (its sink raises) ends alone,
its row cancelled. The loop itself keeps running.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..model.batcher import ContinuousBatcher, SequenceRequest, TokenEvent


@dataclass(eq=False)
class Ticket:
    """One request in the loop. `events` (anything with `put`) receives TokenEvents (the last has a finish)
    or one exception; set `cancel` (or the caller's `external` event) to end it at the next step."""

    request: SequenceRequest
    external: threading.Event | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    events: Any = field(default_factory=queue.Queue)
    rid: int | None = None

    def cancelled(self) -> bool:
        return self.cancel.is_set() or (self.external is not None and self.external.is_set())


class DecodeLoop:
    """Args:
        load: builds the model, on the loop's thread (`model()` waits for it).
        make_batcher: builds an empty ContinuousBatcher for the model (again after a failed step).

    The model is loaded on the thread that decodes with it, so that this thread is the process' only one
    running PyTorch's parallel (OpenMP) regions: decoding in a second thread after the first one ran them
    (loading, casting to bfloat16) measured 1.4x slower for bfloat16 on this 2-core CPU (72 vs 102 tokens/s
    for the 56M hybrid of benchmarks/serve_load.py, one row), while a thread that both loads and decodes runs
    at the first thread's speed.
    """

    def __init__(self, load: Callable[[], Any], make_batcher: Callable[[Any], ContinuousBatcher]) -> None:
        self._load, self._make = load, make_batcher
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._model: Any = None
        self.batcher: ContinuousBatcher | None = None
        self._cv = threading.Condition()
        self._inbox: list[Ticket] = []
        self._tickets: dict[int, Ticket] = {}
        self._closed = False
        self.snapshot = {"active": 0, "cache_bytes": 0}
        self._thread = threading.Thread(target=self._run, name="decode-loop", daemon=True)
        self._thread.start()

    def model(self) -> Any:
        """The loaded model (waits for it); the loading error, re-raised here, if loading failed."""
        self._loaded.wait()
        if self._load_error is not None:
            raise self._load_error
        return self._model

    def submit(self, request: SequenceRequest, cancel: threading.Event | None = None, events=None,
               row_cancel: threading.Event | None = None) -> Ticket:
        """Hand a request to the loop; its events go to `events.put` (default: a queue on the ticket).
        `cancel` (the caller's) or `row_cancel` (set by whoever reads the events) end it at the next step."""
        ticket = Ticket(request, cancel)
        if events is not None:
            ticket.events = events
        if row_cancel is not None:
            ticket.cancel = row_cancel
        with self._cv:
            if self._closed:
                raise RuntimeError("the decoding loop is closed")
            self._inbox.append(ticket)
            self._cv.notify()
        return ticket

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; requests still in flight end with finish "cancelled"."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._model = self._load()
            self.batcher = self._make(self._model)
        except BaseException as err:  # noqa: BLE001  handed to the caller of model()
            self._load_error = err
            self._closed = True
            return
        finally:
            self._loaded.set()
        while True:
            with self._cv:
                while not (self._inbox or self._tickets or self._closed):
                    self._cv.wait()
                inbox, self._inbox = self._inbox, []
                closed = self._closed
            if closed:
                for ticket in [*inbox, *self._tickets.values()]:
                    ticket.events.put(TokenEvent(-1 if ticket.rid is None else ticket.rid, None, "cancelled"))
                return
            for ticket in inbox:
                try:
                    ticket.rid = self.batcher.submit(ticket.request)
                except ValueError as err:
                    _deliver_error(ticket, err)
                    continue
                self._tickets[ticket.rid] = ticket
            for rid, ticket in self._tickets.items():
                if ticket.cancelled():
                    self.batcher.cancel(rid)
            try:
                events = self.batcher.step()
            except Exception as err:  # noqa: BLE001  every request in flight learns it; the loop goes on
                for ticket in self._tickets.values():
                    _deliver_error(ticket, err)
                self._tickets, self.batcher = {}, self._make(self._model)
                continue
            # before the events: a request that learns it finished sees itself gone from the snapshot
            self.snapshot = {"active": self.batcher.active, "cache_bytes": self.batcher.cache_bytes()}
            for event in events:
                ticket = self._tickets.get(event.rid)
                if ticket is None:  # failed on an earlier event of this step
                    continue
                try:
                    ticket.events.put(event)
                except Exception as err:  # noqa: BLE001  (e.g. text that cannot be decoded) ends this request only
                    self.batcher.cancel(event.rid)
                    del self._tickets[event.rid]
                    _deliver_error(ticket, err)
                    continue
                if event.finish is not None:
                    del self._tickets[event.rid]


def _deliver_error(ticket: Ticket, err: BaseException) -> None:
    """Hand `err` to the request; a sink that fails even at that is left behind, never the loop."""
    try:
        ticket.events.put(err)
    except Exception:  # noqa: BLE001, S110  the request is over either way
        pass
