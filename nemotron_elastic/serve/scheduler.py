# SPDX-License-Identifier: Apache-2.0
"""A bounded pool of generation workers: K requests run at once, N more may wait, the rest get 429.

Each request becomes a `Job` whose function runs on one of `num_workers` threads and reports through
`job.events` (a queue the HTTP handler thread reads); the worker puts a final `None` there when the
function returns or raises. Admission is counted, not queued blindly: a job is accepted only while
running + waiting < num_workers + max_queue, so a burst beyond that is refused at once (the server answers
429) instead of piling up unbounded latency.

Cancellation is cooperative: the handler sets `job.cancel` (client gone, shutdown) and the engine checks
it between decoding steps; a job cancelled while still waiting is skipped without running. At shutdown the
waiting jobs are refused at once (`job.error` is a ShuttingDownError) and the running ones get a grace
period. Requests of different budgets run side by side: each worker thread calls the shared model with its
own cache, and torch releases the GIL inside its kernels.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class QueueFullError(RuntimeError):
    """All workers are busy and the wait queue is full."""


class ShuttingDownError(RuntimeError):
    """The pool no longer accepts jobs."""


@dataclass(eq=False)
class Job:
    """One unit of work. `fn(job)` runs on a worker and may put events on `job.events`."""

    fn: Callable[[Job], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue[Any] = field(default_factory=queue.Queue)
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class WorkerPool:
    """Args:
    num_workers: jobs that run at the same time (K).
    max_queue: jobs that may wait for a worker (N); 0 refuses any job while all workers are busy.
    """

    def __init__(self, num_workers: int, max_queue: int) -> None:
        if num_workers < 1 or max_queue < 0:
            raise ValueError(f"need num_workers >= 1 and max_queue >= 0, got {num_workers}, {max_queue}")
        self.num_workers, self.max_queue = num_workers, max_queue
        self._todo: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._admitted: set[Job] = set()
        self._closing = False
        self.counts = {"running": 0, "completed": 0, "cancelled": 0, "failed": 0, "rejected": 0}
        self._threads = [
            threading.Thread(target=self._work, name=f"serve-worker-{i}", daemon=True)
            for i in range(num_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[Job], None]) -> Job:
        """Admit a job or raise QueueFullError / ShuttingDownError (nothing is queued then)."""
        job = Job(fn)
        with self._lock:
            if self._closing:
                raise ShuttingDownError("the server is shutting down")
            if len(self._admitted) >= self.num_workers + self.max_queue:
                self.counts["rejected"] += 1
                raise QueueFullError(
                    f"server busy: {self.num_workers} requests running, {self.max_queue} waiting; retry later"
                )
            self._admitted.add(job)
        self._todo.put(job)
        return job

    def stats(self) -> dict[str, int]:
        """Running / waiting jobs, limits and lifetime counters."""
        with self._lock:
            out = dict(self.counts)
            out["waiting"] = len(self._admitted) - out["running"]
        return {**out, "max_concurrency": self.num_workers, "max_queue": self.max_queue}

    def _work(self) -> None:
        while True:
            job = self._todo.get()
            if job is None:
                return
            # run-or-skip and `started` in one step, so shutdown() sees a job as either waiting or started
            with self._lock:
                if job.done.is_set():  # refused by shutdown() while it waited
                    continue
                run = not job.cancel.is_set()  # a job cancelled while waiting never runs
                if run:
                    self.counts["running"] += 1
                    job.started.set()
            outcome = "cancelled"
            if run:
                try:
                    job.fn(job)
                    outcome = "cancelled" if job.cancel.is_set() else "completed"
                except BaseException as err:  # noqa: BLE001  the handler reports it; the worker goes on
                    job.error, outcome = err, "failed"
            with self._lock:
                if run:
                    self.counts["running"] -= 1
                self._end(job, outcome)

    def _end(self, job: Job, outcome: str) -> None:
        """Count the job's outcome and end its events (None). The caller holds `_lock`."""
        self.counts[outcome] += 1
        self._admitted.discard(job)
        job.events.put(None)  # end of this job's events
        job.done.set()

    def shutdown(self, grace: float = 5.0) -> None:
        """Refuse new jobs and waiting ones (their `error` is a ShuttingDownError), let running ones finish
        for up to `grace` seconds, cancel the rest, stop.

        Waiting jobs end at once rather than start during the grace period: it is for work already under
        way, and a refused client can retry elsewhere now instead of being cut off after `grace`."""
        with self._lock:
            self._closing = True
            for job in [job for job in self._admitted if not job.started.is_set()]:
                job.error = ShuttingDownError("the server is shutting down (the request had not started)")
                job.cancel.set()
                self._end(job, "cancelled")
            pending = list(self._admitted)
        deadline = time.monotonic() + grace
        for job in pending:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        for job in pending:
            job.cancel.set()
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
