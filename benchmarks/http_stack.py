# SPDX-License-Identifier: Apache-2.0
"""The serving HTTP layer: the shipped standard-library server vs FastAPI + uvicorn, on the same engine.

Issue 18 asks for the HTTP layer on a kept ASGI stack (FastAPI + uvicorn, as vLLM and SGLang use) unless
the standard-library server measures equal or better on latency, streaming and the bad-request suite.
This measures exactly that, in one run:

1. A small random-weights elastic checkpoint (`serve_memory.bench_config`, hidden 256, one 8-block
   pattern, budgets 1.0 / 0.75 / 0.5) named `micro`: a decoding step takes a few ms, so the HTTP
   layer's own cost is visible next to decoding.
2. Each stack in its own subprocess on that checkpoint, one torch thread each (the load generator and
   the server share this machine's 2 cores), 16 requests per batch, queue 16:

       stdlib       `python -m nemotron_elastic.serve` (ElasticServer: http.server, a thread per connection)
       stdlib-unfixed  the same with socketserver's listen backlog of 5 and Nagle's algorithm on, as it
                    was before this benchmark (`UNFIXED`)
       fastapi      benchmarks/_fastapi_app.py on uvicorn with uvloop + httptools (uvicorn[standard],
                    what vLLM's `fastapi[standard]` installs)
       fastapi-h11  the same app on uvicorn's pure-Python defaults (asyncio loop, h11 parser)

   The FastAPI app reuses the shipped validation, worker pool and answer builders: only HTTP differs.
3. Rounds in which the stacks take turns (machine noise falls on all of them; only one has load at once):
       latency    max_tokens=1, one request at a time: a new connection each (as `_load_client.py`), and
                  on one keep-alive connection (as the `openai` client); the server's CPU per request
       stream     max_tokens=32 streamed, one at a time: time to first token, gaps between text chunks
       load       concurrency 16, closed loop (`_load_client.closed_loop`), 32 tokens, half streamed:
                  aggregate tokens/s and p50 / p95 latency
   Per-round medians are kept too: their spread is the noise a difference must exceed.
4. The bad-request suite (`_bad_requests.py`: the cases of tests/serve/test_bad_requests.py and
   test_hostile.py) against each stack: 5xx answers, hangs, error answers that are not JSON error objects.

    python benchmarks/http_stack.py [--rounds 3 --latency-requests 40 --stream-requests 8]

Writes benchmarks/results/http_stack.json; prints each stack's numbers and their ratios to stdlib.
Needs the `bench` extra (`pip install -e .[bench] -c constraints.txt`).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bad_requests import run_suite
from _load_client import closed_loop, percentile, request, summarize
from serve_memory import bench_config, build_elastic_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The Time Traveller (for so it will be convenient to speak of him)",
    "There is no difference between Time and any of the three dimensions",
    "Clearly, any real body must have extension in four directions",
]
MODEL = "micro"  # the folder name: the model names the bad-request cases use
# The shipped server with the two socket settings this benchmark led to undone (socketserver's listen
# backlog of 5, Nagle's algorithm on), to show what they changed (docs/SERVING.md "HTTP stack").
UNFIXED = ("import sys; from nemotron_elastic.serve import server as s; s._HTTPServer.request_queue_size = 5; "
           "s._Handler.disable_nagle_algorithm = False; from nemotron_elastic.commands.serve import main; "
           "sys.exit(main(sys.argv[1:]))")


def stack_commands(model_dir: Path, threads: int) -> dict[str, list[str]]:
    """The server command of every stack (each prints `listening on URL` once it listens)."""
    common = ["--threads", str(threads), "--max-concurrency", "16", "--max-queue", "16"]
    app = [sys.executable, str(ROOT / "benchmarks" / "_fastapi_app.py"), "--model", str(model_dir), *common]
    serve = ["--model", str(model_dir), "--quiet", "--port", "0", *common]
    return {
        "stdlib": [sys.executable, "-m", "nemotron_elastic.serve", *serve],
        "stdlib-unfixed": [sys.executable, "-c", UNFIXED, *serve],
        "fastapi": [*app, "--loop", "uvloop", "--http", "httptools"],
        "fastapi-h11": [*app, "--loop", "asyncio", "--http", "h11"],
    }  # fmt: skip


class Server:
    """One stack's server process."""

    def __init__(self, name: str, cmd: list[str], log: Path) -> None:
        self.name, self.log = name, log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"{name} did not start: {line}{log.read_text()[-2000:]}")
        self.url = line.split()[-1]
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.addr = (host, int(port))
        deadline = time.monotonic() + 120
        while not self._healthy():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{name}: /health never answered: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection(*self.addr, timeout=5)
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def keepalive_latencies(addr: tuple[str, int], n: int) -> tuple[list[float], list[str]]:
    """`n` max_tokens=1 completions one after another on one keep-alive connection -> (seconds, texts)."""
    conn = http.client.HTTPConnection(*addr, timeout=60)
    out, texts = [], []
    try:
        for i in range(n):
            body = json.dumps({"model": MODEL, "prompt": PROMPTS[i % 3], "max_tokens": 1, "temperature": 0})
            start = time.perf_counter()
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            out.append(time.perf_counter() - start)
            assert resp.status == 200, answer
            texts.append(answer["choices"][0]["text"])
    finally:
        conn.close()
    return out, texts


async def latency_round(url: str, n: int) -> tuple[list[float], list[str]]:
    """`n` max_tokens=1 completions one at a time, a new connection each -> (seconds, texts)."""
    out, texts = [], []
    for i in range(n):
        r = await request(url, "completion", MODEL, PROMPTS[i % 3], 1, streamed=False)
        assert r["ok"], r["error"]
        out.append(r["seconds"])
        texts.append(r["text"])
    return out, texts


async def stream_round(url: str, n: int, tokens: int) -> tuple[list[float], list[float], list[str]]:
    """`n` streamed completions one at a time -> (TTFTs, gaps between text chunks, texts)."""
    ttfts, gaps, texts = [], [], []
    for i in range(n):
        times: list[float] = []
        r = await request(url, "completion", MODEL, PROMPTS[i % 3], tokens, streamed=True, chunk_times=times)
        assert r["ok"] and r["tokens"] == tokens, r["error"]
        ttfts.append(r["ttft"])
        gaps.extend(b - a for a, b in pairwise(times))
        texts.append(r["text"])
    return ttfts, gaps, texts


async def load_round(url: str, concurrency: int, total: int, tokens: int) -> dict[str, Any]:
    """A closed loop of `total` requests, `concurrency` in flight, every other one streamed."""

    async def make(i: int) -> dict[str, Any]:
        return await request(url, "completion", MODEL, PROMPTS[i % 3], tokens, streamed=i % 2 == 1)

    results, wall = await closed_loop(concurrency, total, make)
    out = summarize(results, wall)
    out["errors"] = sorted({r["error"] for r in results if r["error"]})[:3]
    return out


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"p50_ms": 1e3 * percentile(values, 0.5), "p95_ms": 1e3 * percentile(values, 0.95),
            "mean_ms": 1e3 * statistics.fmean(values), "n": len(values)}


def measure(servers: dict[str, Server], args: argparse.Namespace) -> dict[str, Any]:
    """Every phase, the stacks in turn within every round."""
    raw = {name: {"latency": [], "keepalive": [], "cpu_per_request_ms": [], "ttft": [], "gaps": [], "load": [],
                  "rounds": [], "texts": set()} for name in servers}  # fmt: skip
    for name, srv in servers.items():  # warm-up: first-call costs (allocations, imports) out of the numbers
        asyncio.run(latency_round(srv.url, 5))
        asyncio.run(stream_round(srv.url, 2, args.max_tokens))
        asyncio.run(load_round(srv.url, 16, 16, 8))
    for rnd in range(args.rounds):
        order = list(servers) if rnd % 2 == 0 else list(reversed(servers))  # no stack always goes first
        for name in order:
            srv, r = servers[name], raw[name]
            cpu = srv.cpu_seconds()
            lat, texts = asyncio.run(latency_round(srv.url, args.latency_requests))
            r["cpu_per_request_ms"].append(1e3 * (srv.cpu_seconds() - cpu) / args.latency_requests)
            keep, more = keepalive_latencies(srv.addr, args.latency_requests)
            ttft, gaps, streamed = asyncio.run(stream_round(srv.url, args.stream_requests, args.max_tokens))
            load = asyncio.run(load_round(srv.url, 16, args.load_requests, args.max_tokens))
            r["latency"] += lat
            r["keepalive"] += keep
            r["ttft"] += ttft
            r["gaps"] += gaps
            r["load"].append(load)
            r["texts"].update(texts + more + streamed)
            r["rounds"].append({"latency_p50_ms": 1e3 * statistics.median(lat),
                                "keepalive_p50_ms": 1e3 * statistics.median(keep),
                                "ttft_p50_ms": 1e3 * statistics.median(ttft),
                                "gap_p50_ms": 1e3 * statistics.median(gaps),
                                "load_tokens_per_s": load["tokens_per_s"]})
            print(f"round {rnd + 1} {name:>11}: latency p50 {1e3 * statistics.median(lat):6.2f} ms "
                  f"(keep-alive {1e3 * statistics.median(keep):6.2f}), TTFT p50 {1e3 * statistics.median(ttft):6.2f} "
                  f"ms, gap p50 {1e3 * statistics.median(gaps):5.2f} ms, x16 {load['tokens_per_s']:6.1f} tok/s, "
                  f"failures {load['failures']}", flush=True)  # fmt: skip
    out = {}
    for name, r in raw.items():
        loads = r["load"]
        out[name] = {
            "latency_max_tokens_1": _stats(r["latency"]),
            "latency_max_tokens_1_keepalive": _stats(r["keepalive"]),
            "server_cpu_per_request_ms": statistics.median(r["cpu_per_request_ms"]),
            "stream_ttft": _stats(r["ttft"]),
            "stream_gap": {**_stats(r["gaps"]), "max_ms": 1e3 * max(r["gaps"])},
            "load_concurrency_16": {
                "tokens_per_s": statistics.median(x["tokens_per_s"] for x in loads),
                "latency_p50_s": statistics.median(x["latency_p50_s"] for x in loads),
                "latency_p95_s": statistics.median(x["latency_p95_s"] for x in loads),
                "ttft_p50_s": statistics.median(x["ttft_p50_s"] for x in loads),
                "failures": sum(x["failures"] for x in loads),
                "errors": sorted({e for x in loads for e in x["errors"]})[:3],
            },
            "rounds": r["rounds"],
            "answers": sorted(r["texts"]),
        }
    return out


KEYS = {  # (what, how to read it from a stack's numbers, True when higher is better)
    "latency p50 (max_tokens=1)": (lambda s: s["latency_max_tokens_1"]["p50_ms"], False),
    "latency p95 (max_tokens=1)": (lambda s: s["latency_max_tokens_1"]["p95_ms"], False),
    "keep-alive latency p50": (lambda s: s["latency_max_tokens_1_keepalive"]["p50_ms"], False),
    "keep-alive latency p95": (lambda s: s["latency_max_tokens_1_keepalive"]["p95_ms"], False),
    "server CPU per request": (lambda s: s["server_cpu_per_request_ms"], False),
    "stream TTFT p50": (lambda s: s["stream_ttft"]["p50_ms"], False),
    "stream TTFT p95": (lambda s: s["stream_ttft"]["p95_ms"], False),
    "stream gap p50": (lambda s: s["stream_gap"]["p50_ms"], False),
    "stream gap p95": (lambda s: s["stream_gap"]["p95_ms"], False),
    "x16 tokens/s": (lambda s: s["load_concurrency_16"]["tokens_per_s"], True),
    "x16 latency p95": (lambda s: 1e3 * s["load_concurrency_16"]["latency_p95_s"], False),
}


def round_spread(stack: dict[str, Any], key: str) -> float:
    """(max - min) / median of a per-round median: the noise between rounds."""
    values = [r[key] for r in stack["rounds"]]
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256, help="parent hidden size (default 256)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-requests", type=int, default=40, help="per stack and round, per connection kind")
    ap.add_argument("--stream-requests", type=int, default=8, help="streamed requests per stack and round")
    ap.add_argument("--load-requests", type=int, default=48, help="requests of the x16 loop per stack and round")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens of streamed / loaded requests")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each server (default 1)")
    ap.add_argument("--stacks", default="stdlib,stdlib-unfixed,fastapi,fastapi-h11")
    ap.add_argument("--out", default="http_stack.json")
    args = ap.parse_args()

    import fastapi
    import starlette
    import uvicorn
    from _timing import machine, write_json

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="http_stack-") as tmp:
        model_dir = Path(tmp) / MODEL
        model, specs = build_elastic_checkpoint(model_dir, bench_config(args.hidden, 1, 4096))
        commands = stack_commands(model_dir, args.threads)
        names = args.stacks.split(",")
        servers: dict[str, Server] = {}
        try:
            for name in names:
                servers[name] = Server(name, commands[name], Path(tmp) / f"{name}.log")
                print(f"{name}: {servers[name].url}", flush=True)
            stacks = measure(servers, args)
            for name, srv in servers.items():
                ok = {"model": f"{MODEL}-0.5", "prompt": "The quick", "max_tokens": 4, "temperature": 0}
                stacks[name]["bad_requests"] = suite = run_suite(srv.url, ok)
                print(f"{name:>11}: bad requests {suite['as_expected']}/{suite['cases']} as documented, "
                      f"5xx {suite['five_xx']}, hangs {suite['hangs']}, non-JSON {suite['non_json_errors']}, "
                      f"serves after {suite['serves_after']}", flush=True)
        finally:
            exits = {name: srv.stop() for name, srv in servers.items()}
    base = stacks["stdlib"]
    ratios = {}
    for other in [n for n in names if n != "stdlib"]:
        ratios[f"{other}/stdlib"] = {what: get(stacks[other]) / get(base) for what, (get, _) in KEYS.items()}
    spreads = {name: {k: round_spread(s, k) for k in s["rounds"][0]} for name, s in stacks.items()}
    same = len({json.dumps(s.pop("answers")) for s in stacks.values()}) == 1
    payload = {
        "benchmark": "http_stack",
        "model": {"hidden": args.hidden, "pattern": model.config.pattern,
                  "params": {str(b): s.param_count() for b, s in specs.items()}},
        "settings": {k: getattr(args, k) for k in ("rounds", "latency_requests", "stream_requests",
                                                   "load_requests", "max_tokens", "threads")},
        "versions": {"fastapi": fastapi.__version__, "starlette": starlette.__version__,
                     "uvicorn": uvicorn.__version__, "python": sys.version.split()[0]},
        "stacks": stacks,
        "ratios_to_stdlib": ratios,  # > 1: larger than stdlib (worse for times, better for tokens/s)
        "round_spread": spreads,  # (max - min) / median of the per-round medians
        "same_answers_on_every_stack": same,
        "exit_codes_after_sigterm": exits,
        "wall_s": time.monotonic() - start,
        "machine": machine(),
    }  # fmt: skip
    path = write_json(args.out, payload)
    print(f"\n{'':28}" + "".join(f"{n:>16}" for n in names) + "".join(f"{r:>22}" for r in ratios))
    for what, (get, _higher) in KEYS.items():
        row = "".join(f"{get(stacks[n]):16.2f}" for n in names)
        print(f"{what:28}{row}" + "".join(f"{ratios[r][what]:22.3f}" for r in ratios))
    print(f"same answers on every stack: {same}; exit codes {exits}; {payload['wall_s']:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
