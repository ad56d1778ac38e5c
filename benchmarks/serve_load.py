# SPDX-License-Identifier: Apache-2.0
"""Loopback load test of `python -m nemotron_elastic.serve`: concurrent clients mixing every budget,
completions and chat, streamed and not. Reports failed requests (goal 0), mixed-up answers (goal 0) and
tokens/s per budget.

1. Builds a random-weights elastic checkpoint (budgets 1.0 / 0.75 / 0.5, `serve_memory.bench_config`) and
   starts the real server in a subprocess on a free loopback port.
2. Reference pass: every (endpoint, prompt, budget) once, one at a time, greedy. This is also each
   budget's uncontended decode speed.
3. Load pass: `--clients` threads send `--requests` requests (bounded by `--duration` seconds), cycling
   through budgets, endpoints, prompts and stream on / off. A request fails on a non-200 status, a
   transport error, or a stream without finish_reason / [DONE]; it is mixed up when its model or its
   text differs from the reference (greedy decoding is deterministic, so any difference means another
   request's tokens or cache leaked in).
4. SIGTERM: the server must exit 0.

    python benchmarks/serve_load.py [--hidden 1024 --repeat 1 --clients 6 --requests 36 --max-tokens 24]

Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_memory import bench_config, build_elastic_checkpoint

PROMPTS = [
    "The Time Traveller (for so it will be convenient to speak of him)",
    "There is no difference between Time and any of the three dimensions",
    "Clearly, any real body must have extension in four directions",
]
ENDPOINTS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}


def call(url: str, kind: str, model: str, prompt: str, max_tokens: int, streamed: bool) -> dict[str, Any]:
    """One request -> {"ok", "model", "text", "tokens", "seconds", "ttft", "error"}."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    body.update(
        {"prompt": prompt} if kind == "completion" else {"messages": [{"role": "user", "content": prompt}]}
    )
    if streamed:
        body.update(stream=True, stream_options={"include_usage": True})
    start, out = time.perf_counter(), {"ok": False, "ttft": None}
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    try:
        conn.request("POST", ENDPOINTS[kind], json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return {**out, "error": f"HTTP {resp.status}: {resp.read()[:200]!r}"}
        if not streamed:
            data = json.loads(resp.read())
            choice = data["choices"][0]
            text = choice["text"] if kind == "completion" else choice["message"]["content"]
            tokens, finish, done = data["usage"]["completion_tokens"], choice["finish_reason"], True
            served, server_side = data["model"], data["elastic"]
        else:
            pieces, tokens, finish, done, served, server_side = [], 0, None, False, None, {}
            for line in resp:
                line = line.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[len("data: ") :])
                served = chunk.get("model", served)
                server_side = chunk.get("elastic", server_side)
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk["choices"]:
                    piece = choice.get("text") if kind == "completion" else choice["delta"].get("content")
                    if piece and out["ttft"] is None:
                        out["ttft"] = time.perf_counter() - start
                    pieces.append(piece or "")
                    finish = choice.get("finish_reason") or finish
            text = "".join(pieces)
        ok = done and finish is not None
        return {**out, "ok": ok, "model": served, "text": text, "tokens": tokens,
                "seconds": time.perf_counter() - start,
                "generation_seconds": server_side.get("generation_seconds"),
                "error": None if ok else "incomplete answer"}  # fmt: skip
    except (OSError, ValueError, KeyError) as err:
        return {**out, "error": f"{type(err).__name__}: {err}"}
    finally:
        conn.close()


def start_server(model_dir: Path, concurrency: int, queue: int) -> tuple[subprocess.Popen, str]:
    """`python -m nemotron_elastic.serve` on a free loopback port -> (process, URL)."""
    cmd = [sys.executable, "-m", "nemotron_elastic.serve", "--model", str(model_dir), "--quiet",
           "--port", "0", "--max-concurrency", str(concurrency), "--max-queue", str(queue)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line}{proc.stderr.read()}")
    return proc, line.split()[-1]


def summarize(results: list[tuple[float, dict[str, Any]]], wall: float) -> dict[float, Any]:
    """Per budget: requests, tokens, generation speed (server side: tokens / generation seconds, so time
    waiting for a worker is excluded), the budget's share of the aggregate tokens/s, client latency and
    time to first token."""
    out = {}
    for budget in sorted({b for b, _ in results}, reverse=True):
        rows = [r for b, r in results if b == budget and r["ok"]]
        ttfts = [r["ttft"] for r in rows if r["ttft"] is not None]
        latencies = sorted(r["seconds"] for r in rows)
        generation = sum(r["generation_seconds"] for r in rows)
        out[budget] = {
            "requests": len(rows),
            "tokens": sum(r["tokens"] for r in rows),
            "generation_tokens_per_s": sum(r["tokens"] for r in rows) / generation if generation else None,
            "tokens_per_s_share_of_wall": sum(r["tokens"] for r in rows) / wall,
            "latency_p50_s": statistics.median(latencies) if rows else None,
            "latency_max_s": latencies[-1] if rows else None,
            "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024, help="parent hidden size (default 1024)")
    ap.add_argument("--repeat", type=int, default=1, help="repeats of the 8-block pattern (default 1)")
    ap.add_argument("--clients", type=int, default=6, help="concurrent client threads (default 6)")
    ap.add_argument("--requests", type=int, default=36, help="requests in the load pass (default 36)")
    ap.add_argument("--duration", type=float, default=300.0, help="stop sending new requests after S s")
    ap.add_argument("--max-tokens", type=int, default=24, help="tokens per request (EOS ignored)")
    ap.add_argument("--max-concurrency", type=int, default=2, help="server workers K (default 2)")
    ap.add_argument("--out", default="serve_load.json")
    args = ap.parse_args()

    from _timing import machine, write_json

    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        model_dir = Path(tmp) / "elastic"
        _, specs = build_elastic_checkpoint(model_dir, bench_config(args.hidden, args.repeat, 4096))
        proc, url = start_server(model_dir, args.max_concurrency, queue=args.clients)
        try:
            names = {b: f"elastic-{b!r}" for b in specs}
            combos = [(k, p, b) for k in ENDPOINTS for p in PROMPTS for b in specs]
            print(f"server {url}; reference pass: {len(combos)} requests one at a time", flush=True)
            reference = {}
            ref_results = []
            for kind, prompt, budget in combos:
                r = call(url, kind, names[budget], prompt, args.max_tokens, streamed=False)
                assert r["ok"], r["error"]
                reference[(kind, prompt, budget)] = r["text"]
                ref_results.append((budget, r))
            plan = [(*combos[i % len(combos)], i % 2 == 1) for i in range(args.requests)]
            deadline = time.monotonic() + args.duration
            print(f"load pass: {len(plan)} requests from {args.clients} clients", flush=True)
            lock, results, skipped = threading.Lock(), [], [0]

            def client(job: tuple[str, str, float, bool]) -> None:
                kind, prompt, budget, streamed = job
                if time.monotonic() > deadline:
                    with lock:
                        skipped[0] += 1
                    return
                r = call(url, kind, names[budget], prompt, args.max_tokens, streamed)
                r["mixed_up"] = r["ok"] and (r["model"] != names[budget] or r["text"] != reference[job[:3]])
                with lock:
                    results.append((budget, r))

            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(client, plan))
            wall = time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                exit_code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_code = None
    failures = [r["error"] for _, r in results if not r["ok"]]
    mixed = sum(1 for _, r in results if r.get("mixed_up"))
    load = summarize(results, wall)
    uncontended = summarize(ref_results, sum(r["seconds"] for _, r in ref_results))
    speeds = [uncontended[b]["generation_tokens_per_s"] for b in sorted(uncontended, reverse=True)]
    payload = {
        "benchmark": "serve_load",
        "model": {
            "hidden": args.hidden,
            "pattern_repeats": args.repeat,
            "params": {str(b): s.param_count() for b, s in specs.items()},
        },
        "server": {"max_concurrency": args.max_concurrency, "max_queue": args.clients},
        "clients": args.clients,
        "requests_sent": len(results),
        "requests_skipped_after_duration": skipped[0],
        "max_tokens": args.max_tokens,
        "wall_s": wall,
        "failures": len(failures),
        "failure_messages": failures[:10],
        "mixed_up": mixed,
        "aggregate_tokens_per_s": sum(r["tokens"] for _, r in results if r["ok"]) / wall,
        "per_budget_under_load": {str(b): v for b, v in load.items()},
        "per_budget_uncontended": {str(b): v for b, v in uncontended.items()},
        "smaller_budgets_faster_uncontended": all(a < b for a, b in itertools.pairwise(speeds)),
        "server_exit_code_after_sigterm": exit_code,
        "machine": machine(),
    }
    path = write_json(args.out, payload)
    print(f"failures {len(failures)}, mixed up {mixed}, {payload['aggregate_tokens_per_s']:.1f} tok/s total")
    for b in sorted(load, reverse=True):
        print(f"budget {b}: generation {load[b]['generation_tokens_per_s']:.2f} tok/s under load, "
              f"{uncontended[b]['generation_tokens_per_s']:.2f} alone")  # fmt: skip
    print(f"server exit code {exit_code}; wrote {path}")


if __name__ == "__main__":
    main()
