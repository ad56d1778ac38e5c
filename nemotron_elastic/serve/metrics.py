# SPDX-License-Identifier: Apache-2.0
"""`GET /metrics`: the server's counters in Prometheus' text exposition format (version 0.0.4).

    nemotron_elastic_queue_waiting                    requests admitted and waiting for a worker
    nemotron_elastic_running{model="NAME-0.5"}        requests generating now, per served model (budget)
    nemotron_elastic_requests_total{outcome="..."}    finished requests: completed / cancelled / failed
    nemotron_elastic_prompt_tokens_total{model=...}   prompt tokens read
    nemotron_elastic_generated_tokens_total{model=..} completion tokens generated
    nemotron_elastic_generated_tokens_per_second      over the last WINDOW_S seconds, all models
    nemotron_elastic_time_to_first_token_seconds      histogram (_bucket{le=...}, _sum, _count)

Scrapers (Prometheus, vLLM-style dashboards) compute rates from the counters; the tokens/s gauge is there
for a human reading the page. Every update takes one lock: a few per generated token, nothing per byte.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import Any

WINDOW_S = 10.0
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds, as vLLM's
PREFIX = "nemotron_elastic_"


def _label(value: str) -> str:
    """A label value escaped for the text format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServeMetrics:
    """Thread-safe counters, fed by the workers (`started`, `tokens`, `finished`) and read by `render`."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.prompt_tokens: dict[str, int] = {}
        self.generated: dict[str, int] = {}
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)  # per bucket, the last one +Inf
        self.ttft_sum = 0.0
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) within the window

    def started(self, model: str, prompt_tokens: int) -> None:
        with self._lock:
            self.running[model] = self.running.get(model, 0) + 1
            self.prompt_tokens[model] = self.prompt_tokens.get(model, 0) + prompt_tokens

    def first_token(self, seconds: float) -> None:
        """The time from a request's start on a worker to its first generated token."""
        with self._lock:
            self.ttft_counts[bisect.bisect_left(TTFT_BUCKETS, seconds)] += 1
            self.ttft_sum += seconds

    def tokens(self, model: str, count: int) -> None:
        if count <= 0:
            return
        now = self._clock()
        with self._lock:
            self.generated[model] = self.generated.get(model, 0) + count
            self._recent.append((now, count))
            self._trim(now)

    def finished(self, model: str) -> None:
        with self._lock:
            self.running[model] = self.running.get(model, 1) - 1

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()

    def tokens_per_second(self) -> float:
        with self._lock:
            self._trim(self._clock())
            return sum(n for _, n in self._recent) / WINDOW_S

    def render(self, queue: dict[str, int]) -> str:
        """The metrics page; `queue` is the worker pool's `stats()`."""
        rate = self.tokens_per_second()
        with self._lock:
            lines: list[str] = []

            def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
                lines.append(f"# HELP {PREFIX}{name} {help_text}")
                lines.append(f"# TYPE {PREFIX}{name} {kind}")
                lines.extend(f"{PREFIX}{name}{labels} {value:g}" for labels, value in samples)

            def per_model(values: dict[str, int]) -> list[tuple[str, float]]:
                return [(f'{{model="{_label(m)}"}}', v) for m, v in sorted(values.items())]

            family("queue_waiting", "gauge", "Requests admitted and waiting for a worker.",
                   [("", queue.get("waiting", 0))])
            family("running", "gauge", "Requests generating now, per served model (budget).",
                   per_model(self.running))
            family("requests_total", "counter", "Finished requests by outcome.",
                   [(f'{{outcome="{k}"}}', queue.get(k, 0)) for k in ("completed", "cancelled", "failed")])
            family("prompt_tokens_total", "counter", "Prompt tokens read.", per_model(self.prompt_tokens))
            family("generated_tokens_total", "counter", "Completion tokens generated.", per_model(self.generated))
            family("generated_tokens_per_second", "gauge",
                   f"Completion tokens per second over the last {WINDOW_S:g} s.", [("", rate)])
            cumulative, buckets = 0, []
            for bound, count in zip((*TTFT_BUCKETS, float("inf")), self.ttft_counts):
                cumulative += count
                buckets.append((f'_bucket{{le="{"+Inf" if bound == float("inf") else f"{bound:g}"}"}}', cumulative))
            family("time_to_first_token_seconds", "histogram", "Seconds from a request's start to its first token.",
                   [*buckets, ("_sum", self.ttft_sum), ("_count", cumulative)])
        # a histogram's samples are the family name + "_bucket{le=...}" / "_sum" / "_count"
        return "\n".join(lines) + "\n"


class MeteredSink:
    """A request's event queue (`events.put`) that counts its tokens and the time to its first one for
    /metrics on the way. An exception that ends the request is not passed on: it stays with the request's
    RequestStream, whose owner raises it (server.py `_run`: the pool reports it as the job's error).

    `hold` (a non-streamed answer, written whole at the end): the events are kept until the last one and
    then passed on together, so the handler's thread wakes once per request instead of once per token (its
    wake-ups run Python under the GIL that the decoding thread then waits for). Measured in the server of
    benchmarks/serve_load.py (half its requests non-streamed), handing out an 8-row step's events took
    0.20-0.25 ms (median) against 0.24-0.34 ms before."""

    def __init__(self, events: Any, metrics: ServeMetrics, model: str, hold: bool = False) -> None:
        self.events, self.metrics, self.model = events, metrics, model
        self.start, self.first = time.monotonic(), True
        self.held: list[Any] | None = [] if hold else None

    def put(self, event: Any) -> None:
        if isinstance(event, BaseException):
            return
        if event.token_ids:
            if self.first:
                self.metrics.first_token(time.monotonic() - self.start)
                self.first = False
            self.metrics.tokens(self.model, len(event.token_ids))
        if self.held is None:
            self.events.put(event)
        elif event.finish_reason is None:
            self.held.append(event)
        else:
            for each in (*self.held, event):
                self.events.put(each)
            self.held = []
