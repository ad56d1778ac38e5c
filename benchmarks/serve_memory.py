# SPDX-License-Identifier: Apache-2.0
"""Resident memory of many-in-one serving: budgets 1.0 + 0.75 + 0.5 from one engine vs the parent alone
vs three separate sliced models. Goal (issue 8): one engine <= 1.05x the parent alone; separate copies
take about 1 + 0.75 + 0.5 = 2.25x.

Each scenario runs in a fresh subprocess (so nothing of one leaks into the next) that imports everything,
records its RSS (the import baseline), loads its model(s), serves the same load, `--per-budget` requests
per budget at once (threads calling the engine; the engine decodes them in one continuous batch), and
records RSS again (VmRSS and the peak VmHWM from /proc/self/status), and the peak bytes of the batch's
KV + Mamba state (sampled from the engine while the requests decode), reported on their own:

    parent       ManyInOneEngine on a plain checkpoint of the parent: every request at 1.0
    many-in-one  ManyInOneEngine on the elastic checkpoint: requests at 1.0, 0.75 and 0.5
    separate     three engines on three standalone sliced checkpoints (1.0, 0.75, 0.5)

The weights themselves are held once (`weights` ratio 1.000); what many-in-one adds over the parent is the
working memory of the sliced forward (activations of a batch at the widest active budget, small
per-run products) and the decoding state of requests of other budgets.

Ratios are given on the whole process RSS and on the model's share (RSS minus the import baseline). The
model is random (weights, not quality, are measured): by default a 24-layer hybrid of d 1536 (~1.3 GB in
float32), large enough that weights dominate the ~0.4 GB of the Python / torch runtime.

    python benchmarks/serve_memory.py [--hidden 1536 --repeat 3 --tokens 16 --per-budget 3 --dtype float32]

Writes benchmarks/results/serve_memory.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

BUDGETS = (1.0, 0.75, 0.5)
SCENARIOS = ("parent", "many-in-one", "separate")


def bench_config(hidden: int, repeat: int, vocab: int) -> Any:
    """A NemotronH-like hybrid (pattern M-M*M-M- repeated), widths proportional to `hidden`."""
    from nemotron_elastic.config.model import ModelConfig

    return ModelConfig(
        pattern="M-M*M-M-" * repeat,
        vocab_size=vocab,
        hidden_size=hidden,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=hidden // 16,
        intermediate_size=3 * hidden,
        mlp_activation="relu2",
        mamba_num_heads=hidden // 32,
        mamba_head_dim=64,  # d_inner = 2 x hidden, as in NemotronH
        mamba_n_groups=2,
        ssm_state_size=64,
        chunk_size=64,
    )


def build_elastic_checkpoint(out: Path, cfg: Any, budgets: tuple[float, ...] = BUDGETS, seed: int = 0) -> Any:
    """A random-weights elastic checkpoint with `budgets` (specs: `spec_for_budget`) and a BPE tokenizer
    trained on the packaged held-out text (the config's vocabulary is set to the tokenizer's size).

    Returns:
        (model, specs): the parent in memory and {budget: SubnetSpec}.
    """
    import torch

    from nemotron_elastic.checkpoint.elastic import save_elastic
    from nemotron_elastic.config.run import TrainConfig
    from nemotron_elastic.config.types import from_dict
    from nemotron_elastic.data import heldout_text
    from nemotron_elastic.data.tokenizer import train_bpe
    from nemotron_elastic.model import HybridLM
    from nemotron_elastic.router import Router, build_menu
    from nemotron_elastic.subnet.uniform import spec_for_budget

    tok = train_bpe(heldout_text().split("\n\n"), cfg.vocab_size)
    cfg = dataclasses.replace(cfg, vocab_size=len(tok), eos_token_id=tok.eos_token_id)
    with torch.device("meta"):
        model = HybridLM(cfg)
    model.to_empty(device="cpu")
    model.init_weights(torch.Generator().manual_seed(seed))
    model.eval()
    specs = {b: spec_for_budget(cfg, b) for b in budgets}
    router = Router([build_menu(cfg, "hidden", [1.0, 0.5])], list(budgets), hidden_dim=8)
    entries = [{"budget": b, "spec": s.to_dict(), "params": s.param_count()} for b, s in specs.items()]
    save_elastic(
        out,
        model,
        tok,
        router,
        {"budgets": entries},
        from_dict(TrainConfig, {"parent": "-", "out": "-"}),
        None,
    )
    return model, specs


def prepare(work: Path, hidden: int, repeat: int) -> dict[str, Any]:
    """Write the elastic checkpoint, a plain parent checkpoint and the three sliced ones."""
    from nemotron_elastic.checkpoint import save_native
    from nemotron_elastic.io import load_tokenizer
    from nemotron_elastic.subnet.slicing import slice_model

    model, specs = build_elastic_checkpoint(work / "elastic", bench_config(hidden, repeat, 4096))
    tok = load_tokenizer(work / "elastic")
    save_native(model, work / "parent", tokenizer=tok)
    for budget, spec in specs.items():
        save_native(slice_model(model, spec), work / f"sliced-{budget}", tokenizer=tok)
    return {
        "config": {"pattern": model.config.pattern, "hidden": hidden, "vocab": model.config.vocab_size},
        "params": {str(b): s.param_count() for b, s in specs.items()},
        "param_fraction": {str(b): s.param_count() / model.config.num_parameters() for b, s in specs.items()},
    }


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def child(scenario: str, work: Path, tokens: int, dtype: str, per_budget: int) -> dict[str, Any]:
    """One scenario in this (fresh) process; returns its measurements."""

    from nemotron_elastic.serve.engine import ManyInOneEngine
    from nemotron_elastic.serve.memory import weight_bytes

    baseline = _status()["VmRSS"]
    if scenario == "parent":
        engines = [ManyInOneEngine(work / "parent", dtype=dtype)]
        jobs = [(engines[0], 1.0)] * len(BUDGETS) * per_budget
    elif scenario == "many-in-one":
        engines = [ManyInOneEngine(work / "elastic", dtype=dtype)]
        jobs = [(engines[0], b) for b in BUDGETS] * per_budget
    else:
        engines = [ManyInOneEngine(work / f"sliced-{b}", dtype=dtype) for b in BUDGETS]
        jobs = [(e, 1.0) for e in engines] * per_budget
    loaded = _status()["VmRSS"]
    results: list[Any] = [None] * len(jobs)

    def serve(i: int, engine: ManyInOneEngine, budget: float) -> None:
        prompt = engine.encode("The Time Traveller (for so it will be convenient to speak of him)")
        results[i] = engine.generate(prompt, budget, max_new_tokens=tokens, temperature=0, ignore_eos=True)

    threads = [threading.Thread(target=serve, args=(i, e, b)) for i, (e, b) in enumerate(jobs)]
    peak_cache, done = [0], threading.Event()

    def watch() -> None:  # the batch's KV + Mamba state bytes, sampled while the requests decode together
        while not done.wait(0.005):
            peak_cache[0] = max(peak_cache[0], sum(e.memory_report()["active_cache_bytes"] for e in engines))

    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    after = _status()
    for engine in engines:
        engine.close()
    return {
        "rss_after_imports": baseline,
        "rss_loaded": loaded,
        "rss_serving": after["VmRSS"],
        "peak_rss": after["VmHWM"],
        "weight_bytes_counted": sum(weight_bytes(e.model) for e in engines),
        "batch_cache_bytes_peak": peak_cache[0],
        "cache_bytes": [r.stats.cache_bytes for r in results],
        "requests": [{"model": r.stats.model, "tokens": r.stats.completion_tokens} for r in results],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--hidden", type=int, default=1536, help="parent hidden size (default 1536: ~1.3 GB fp32)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the 8-block pattern (default 3)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens generated per request")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--per-budget", type=int, default=3, help="concurrent requests per budget (default 3)")
    ap.add_argument("--out", default="serve_memory.json")
    ap.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # the measured subprocess
        print(json.dumps(child(args.child, Path(args.work), args.tokens, args.dtype, args.per_budget)))
        return

    from _timing import machine, write_json

    with tempfile.TemporaryDirectory(prefix="serve_memory-") as tmp:
        work = Path(tmp)
        info = prepare(work, args.hidden, args.repeat)
        runs = {}
        for scenario in SCENARIOS:
            cmd = [sys.executable, __file__, "--child", scenario, "--work", str(work),
                   "--tokens", str(args.tokens), "--dtype", args.dtype,
                   "--per-budget", str(args.per_budget)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[scenario] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{scenario:12s} RSS {runs[scenario]['rss_serving'] / 2**20:8.1f} MiB", flush=True)
    parent = runs["parent"]

    def ratio(key: str, scenario: str, minus_baseline: bool) -> float:
        run = runs[scenario]
        if minus_baseline:
            return (run[key] - run["rss_after_imports"]) / (parent[key] - parent["rss_after_imports"])
        return run[key] / parent[key]

    ratios = {
        scenario: {
            "rss_serving": ratio("rss_serving", scenario, False),
            "model_rss_serving": ratio("rss_serving", scenario, True),
            "peak_rss": ratio("peak_rss", scenario, False),
            "weights_counted": runs[scenario]["weight_bytes_counted"] / parent["weight_bytes_counted"],
            # RSS without the decoding state (KV + Mamba states, reported on its own below)
            "rss_serving_without_cache": (runs[scenario]["rss_serving"] - runs[scenario]["batch_cache_bytes_peak"])
            / (parent["rss_serving"] - parent["batch_cache_bytes_peak"]),
            "batch_cache_bytes_peak": runs[scenario]["batch_cache_bytes_peak"] / max(1, parent["batch_cache_bytes_peak"]),
        }
        for scenario in SCENARIOS
    }
    payload = {
        "benchmark": "serve_memory",
        "dtype": args.dtype,
        "tokens_per_request": args.tokens,
        "requests_per_budget": args.per_budget,
        **info,
        "runs": runs,
        "ratio_to_parent": ratios,
        "goal": "many-in-one RSS while serving <= 1.05x the parent's (separate copies ~2.25x)",
        "goal_met": ratios["many-in-one"]["rss_serving"] <= 1.05,
        # the stricter reading: the model's share of the RSS (the import baseline removed)
        "goal_met_by_model_share": ratios["many-in-one"]["model_rss_serving"] <= 1.05,
        "machine": machine(),
    }
    path = write_json(args.out, payload)
    for scenario in SCENARIOS:
        r = ratios[scenario]
        print(f"{scenario:12s} x parent: RSS {r['rss_serving']:.3f}, "
              f"model share {r['model_rss_serving']:.3f}, "
              f"peak {r['peak_rss']:.3f}, weights {r['weights_counted']:.3f}, "
              f"KV + state {runs[scenario]['batch_cache_bytes_peak'] / 2**20:.1f} MiB")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
