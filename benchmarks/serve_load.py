# SPDX-License-Identifier: Apache-2.0
"""Loopback load test of `python -m nemotron_elastic.serve` with continuous batching, and the batched
decoder next to its alternatives, in one run.

1. Builds a random-weights elastic checkpoint (budgets 1.0 / 0.75 / 0.5 of a 56M-parameter hybrid,
   `serve_memory.bench_config`) and starts the real server in a subprocess on a free loopback port.
2. Reference pass: every (endpoint, prompt, budget) once, one at a time, greedy.
3. Sweeps: concurrency 1 / 4 / 8 / 16 (closed loop: each client sends its next request when its last one
   finished) for budget 1.0 alone, budget 0.5 alone and mixed budgets (1.0 / 0.75 / 0.5 in turn); half the
   requests stream. Per point: aggregate tokens/s, p50 / p95 latency and time to first token, failures,
   and answers that differ from the reference (greedy decoding: any difference is a batching error).
   The goals' points (1.0 at 1 and 8, 0.5 at 8) are then measured again in 3 interleaved rounds; the goal
   ratios use their medians.
   The load generator is one asyncio process (`_load_client.py`): it shares the cores with the server.
4. SIGTERM: the server must exit 0.
5. In process, with the server gone: the padded vs paged KV cache (decode tokens/s and cache bytes at 8
   and 16 rows); lm-eval `generate_until` one at a time vs batched (same outputs, seconds); our batched
   `generate` vs transformers' batched `generate` of the exported HF checkpoint on the same prompts.

    python benchmarks/serve_load.py [--hidden 1088 --max-tokens 128 --rounds 2]
    python benchmarks/serve_load.py --baseline /tmp/old   # also an older tree's server, goal rounds in turn

Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load_client import ENDPOINTS, closed_loop, request, summarize
from serve_memory import bench_config, build_elastic_checkpoint

PROMPTS = [
    "The Time Traveller (for so it will be convenient to speak of him)",
    "There is no difference between Time and any of the three dimensions",
    "Clearly, any real body must have extension in four directions",
]
LEVELS = (1, 4, 8, 16)


def start_server(model_dir: Path, concurrency: int, queue: int, kv_cache: str, dtype: str | None = None,
                 tree: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m nemotron_elastic.serve` on a free loopback port -> (process, URL); `tree`: the package of
    another source tree (a baseline) instead of this one."""
    cmd = [sys.executable, "-m", "nemotron_elastic.serve", "--model", str(model_dir), "--quiet",
           "--port", "0", "--max-concurrency", str(concurrency), "--max-queue", str(queue),
           "--kv-cache", kv_cache] + (["--dtype", dtype] if dtype else [])  # fmt: skip
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=None if tree is None else str(tree))
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line}{proc.stderr.read()}")
    return proc, line.split()[-1]


async def sweep(url: str, names: dict[float, str], args: argparse.Namespace, goals: bool = True) -> dict[str, Any]:
    """The reference pass, then every (scenario, concurrency) point, then (`goals`) the goal rounds."""
    combos = [(k, p, b) for k in ENDPOINTS for p in PROMPTS for b in names]
    reference = {}
    for kind, prompt, budget in combos:
        r = await request(url, kind, names[budget], prompt, args.max_tokens, streamed=False)
        assert r["ok"], r["error"]
        reference[(kind, prompt, budget)] = r["text"]
    scenarios = {"1.0": [1.0], "0.5": [0.5], "mixed": sorted(names, reverse=True)}
    out: dict[str, Any] = {}
    for scenario, budgets in scenarios.items():
        out[scenario] = {}
        for level in LEVELS:
            kinds = list(ENDPOINTS)
            jobs = [(kinds[i % 2], PROMPTS[i % 3], budgets[i % len(budgets)], (i // 2) % 2 == 1)
                    for i in range(level * args.rounds)]

            async def make(i: int, jobs=jobs) -> dict[str, Any]:
                kind, prompt, budget, streamed = jobs[i]
                r = await request(url, kind, names[budget], prompt, args.max_tokens, streamed)
                r["mixed_up"] = r["ok"] and (r["model"] != names[budget] or r["text"] != reference[(kind, prompt, budget)])
                return r

            results, wall = await closed_loop(level, len(jobs), make)
            point = summarize(results, wall)
            point["mixed_up"] = sum(1 for r in results if r.get("mixed_up"))
            point["errors"] = sorted({r["error"] for r in results if r["error"]})[:5]
            out[scenario][str(level)] = point
            print(f"{scenario:>5} x{level:<2}: {point['tokens_per_s']:7.1f} tok/s, p50 {point['latency_p50_s']:.2f} s, "
                  f"p95 {point['latency_p95_s']:.2f} s, failures {point['failures']}, mixed up {point['mixed_up']}",
                  flush=True)
    if goals:
        out["goal_rounds"] = (await goal_rounds({"this": url}, names, args))["this"]
    return out


async def goal_rounds(urls: dict[str, str], names: dict[float, str], args: argparse.Namespace,
                      rounds: int = 3) -> dict[str, dict]:
    """The goals' three points (budget 1.0 at concurrency 1 and 8, budget 0.5 at 8) measured in turn, round
    after round (and server after server), so machine noise (this shared 2-core VM drifts by tens of
    percent over minutes) falls on every point alike; the goals use the medians. -> {server: rounds}."""
    points = {"1.0 x1": (1.0, 1), "1.0 x8": (1.0, 8), "0.5 x8": (0.5, 8)}
    seen: dict[str, dict[str, list[float]]] = {label: {k: [] for k in points} for label in urls}
    for _ in range(rounds):
        for key, (budget, level) in points.items():
            for label, url in urls.items():
                async def make(i: int, budget=budget, url=url) -> dict[str, Any]:
                    return await request(url, "completion", names[budget], PROMPTS[i % 3], args.max_tokens,
                                         i % 2 == 1)

                results, wall = await closed_loop(level, level * args.rounds, make)
                seen[label][key].append(summarize(results, wall)["tokens_per_s"])
    return {label: {"tokens_per_s": s, "median": {k: statistics.median(v) for k, v in s.items()}}
            for label, s in seen.items()}


def goal_ratios(median: dict[str, float]) -> dict[str, float]:
    return {"concurrency8_over_1_at_budget_1.0": median["1.0 x8"] / median["1.0 x1"],
            "budget0.5_over_1.0_at_concurrency8": median["0.5 x8"] / median["1.0 x8"]}


async def against_baseline(url: str, base_url: str, names: dict[float, str], args: argparse.Namespace,
                           points: dict[str, Any]) -> dict[str, Any]:
    """The baseline server's sweep, then both servers' goal rounds in turn: this tree over the baseline."""
    base = await sweep(base_url, names, args, goals=False)
    rounds = await goal_rounds({"this": url, "baseline": base_url}, names, args)
    return {
        "points": base,
        "goal_rounds": rounds,
        "goals": {label: goal_ratios(r["median"]) for label, r in rounds.items()},
        "this_over_baseline": {scenario: {level: points[scenario][level]["tokens_per_s"] / p["tokens_per_s"]
                                          for level, p in levels.items()} for scenario, levels in base.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1088, help="parent hidden size (default 1088: ~56M params)")
    ap.add_argument("--repeat", type=int, default=1, help="repeats of the 8-block pattern (default 1)")
    ap.add_argument("--max-tokens", type=int, default=128, help="tokens per request (EOS ignored; default 128: "
                    "each request's prefill and HTTP round trip a small share, as in chat use)")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client per point (default 2)")
    ap.add_argument("--kv-cache", default="padded", help="the server's KV cache kind (default padded)")
    ap.add_argument("--dtype", help="the server's dtype (default: as stored, float32)")
    ap.add_argument("--skip-in-process", action="store_true", help="only the server sweeps")
    ap.add_argument("--baseline", help="another source tree (e.g. `git worktree add /tmp/old REV`): its server "
                                       "runs the same sweeps, and both run the goal rounds in turn")
    ap.add_argument("--out", default="serve_load.json")
    args = ap.parse_args()

    from _timing import machine, write_json

    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        model_dir = Path(tmp) / "elastic"
        model, specs = build_elastic_checkpoint(model_dir, bench_config(args.hidden, args.repeat, 4096))
        proc, url = start_server(model_dir, max(LEVELS), 4 * max(LEVELS), args.kv_cache, args.dtype)
        names = {b: f"elastic-{b!r}" for b in specs}
        print(f"server {url} ({model.num_parameters() / 1e6:.1f}M parameters)", flush=True)
        baseline = None
        try:
            points = asyncio.run(sweep(url, names, args))
            if args.baseline:
                tree = Path(args.baseline).resolve()
                base_proc, base_url = start_server(model_dir, max(LEVELS), 4 * max(LEVELS), args.kv_cache,
                                                   args.dtype, tree)
                try:
                    print(f"baseline server {base_url} ({tree})", flush=True)
                    baseline = asyncio.run(against_baseline(url, base_url, names, args, points))
                    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True, check=False).stdout.strip()
                    baseline = {"tree": f"{tree.name}@{rev or 'unknown'}", **baseline}
                finally:
                    base_proc.send_signal(signal.SIGTERM)
                    base_proc.wait(timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                exit_code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_code = None
        in_process = {}
        if not args.skip_in_process:
            from _serve_compare import compare_all

            in_process = compare_all(model, specs, model_dir, args.max_tokens, Path(tmp))
    med = points["goal_rounds"]["median"]
    payload = {
        "benchmark": "serve_load",
        "model": {"hidden": args.hidden, "pattern_repeats": args.repeat,
                  "params": {str(b): s.param_count() for b, s in specs.items()}},
        "server": {"max_concurrency": max(LEVELS), "max_queue": 4 * max(LEVELS), "kv_cache": args.kv_cache,
                   "dtype": args.dtype or "float32"},
        "max_tokens": args.max_tokens,
        "requests_per_client": args.rounds,
        "points": points,
        "goals": {
            "measured_as": "medians of 3 interleaved rounds (points.goal_rounds)",
            "concurrency8_over_1_at_budget_1.0": med["1.0 x8"] / med["1.0 x1"],
            "concurrency8_over_1_goal": 4.0,
            "budget0.5_over_1.0_at_concurrency8": med["0.5 x8"] / med["1.0 x8"],
            "budget0.5_over_1.0_goal": 1.6,
        },
        "failures": sum(p["failures"] for k, s in points.items() if k != "goal_rounds" for p in s.values()),
        "mixed_up": sum(p["mixed_up"] for k, s in points.items() if k != "goal_rounds" for p in s.values()),
        "server_exit_code_after_sigterm": exit_code,
        "baseline": baseline,
        "in_process": in_process,
        "machine": machine(),
    }
    path = write_json(args.out, payload)
    if baseline:
        print(f"against {baseline['tree']} (goal rounds in turn): {json.dumps(baseline['goals'])}; "
              f"this / baseline: {json.dumps(baseline['this_over_baseline'])}")
    g = payload["goals"]
    print(f"x8 / x1 at 1.0: {g['concurrency8_over_1_at_budget_1.0']:.2f} (goal 4); 0.5 / 1.0 at x8: "
          f"{g['budget0.5_over_1.0_at_concurrency8']:.2f} (goal 1.6); failures {payload['failures']}, "
          f"mixed up {payload['mixed_up']}; exit code {exit_code}; wrote {path}")


if __name__ == "__main__":
    main()
