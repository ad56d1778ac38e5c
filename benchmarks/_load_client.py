# SPDX-License-Identifier: Apache-2.0
"""The asynchronous load generator of benchmarks/serve_load.py: one process, one event loop, any number of
concurrent OpenAI requests over plain asyncio streams (it shares the 2 cores with the server, so it must not
spend them on threads).

`request(...)` sends one completion / chat request and returns what the client saw: status, text, tokens,
latency and, for streams, the time to the first text chunk. `closed_loop(...)` keeps `concurrency` requests
in flight until `total` are done (each client sends its next request when its last one finished).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

ENDPOINTS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}


async def request(url: str, kind: str, model: str, prompt: str, max_tokens: int, streamed: bool,
                  chunk_times: list[float] | None = None) -> dict[str, Any]:
    """One request -> {"ok", "status", "model", "text", "tokens", "seconds", "ttft", "error"}.

    `chunk_times` (streams): a list that receives the arrival time of each text chunk, in seconds since the
    request was sent (benchmarks/http_stack.py derives inter-chunk gaps from it)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    body.update({"prompt": prompt} if kind == "completion" else {"messages": [{"role": "user", "content": prompt}]})
    if streamed:
        body.update(stream=True, stream_options={"include_usage": True})
    data = json.dumps(body).encode()
    head = (f"POST {ENDPOINTS[kind]} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    start = time.perf_counter()
    out: dict[str, Any] = {"ok": False, "status": None, "ttft": None, "tokens": 0, "text": "", "model": None}
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head + data)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        out["status"] = status
        length = None
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if status != 200 or not streamed:
            raw = await (reader.readexactly(length) if length is not None else reader.read())
            writer.close()
            if status != 200:
                return {**out, "error": f"HTTP {status}: {raw[:200]!r}"}
            answer = json.loads(raw)
            choice = answer["choices"][0]
            out.update(text=choice["text"] if kind == "completion" else choice["message"]["content"],
                       tokens=answer["usage"]["completion_tokens"], model=answer["model"],
                       ok=choice["finish_reason"] is not None)
        else:
            pieces, finish, done = [], None, False
            while line := await reader.readline():
                line = line.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[len("data: "):])
                out["model"] = chunk.get("model", out["model"])
                if chunk.get("usage"):
                    out["tokens"] = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    piece = choice.get("text") if kind == "completion" else choice["delta"].get("content")
                    if piece and out["ttft"] is None:
                        out["ttft"] = time.perf_counter() - start
                    if piece and chunk_times is not None:
                        chunk_times.append(time.perf_counter() - start)
                    pieces.append(piece or "")
                    finish = choice.get("finish_reason") or finish
            writer.close()
            out.update(text="".join(pieces), ok=done and finish is not None)
        out["seconds"] = time.perf_counter() - start
        out["error"] = None if out["ok"] else "incomplete answer"
        return out
    except (OSError, ValueError, KeyError, IndexError, asyncio.IncompleteReadError) as err:
        return {**out, "error": f"{type(err).__name__}: {err}", "seconds": time.perf_counter() - start}


async def closed_loop(concurrency: int, total: int, make: Callable[[int], Any]) -> tuple[list[dict[str, Any]], float]:
    """Run `total` requests (`make(i)` -> awaitable) with `concurrency` in flight -> (results, wall seconds)."""
    counter, results = iter(range(total)), []

    async def client() -> None:
        for i in counter:
            results.append(await make(i))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summarize(results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """Aggregate tokens/s over the wall time, p50 / p95 latency and time to first token (streams)."""
    ok = [r for r in results if r["ok"]]
    latencies = [r["seconds"] for r in ok]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    return {
        "requests": len(results),
        "failures": len(results) - len(ok),
        "tokens": sum(r["tokens"] for r in ok),
        "wall_s": wall,
        "tokens_per_s": sum(r["tokens"] for r in ok) / wall if wall else None,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "ttft_p50_s": percentile(ttfts, 0.5),
        "ttft_p95_s": percentile(ttfts, 0.95),
    }
