# SPDX-License-Identifier: Apache-2.0
"""Data at scale, measured side by side (benchmarks/results/data_speed.json; docs/DESIGN.md 3.10).

1. prepare: the packaged default corpus (training split) written once as a jsonl file; interleaved over
   `--repeats` rounds, (a) a plain loop that reads the file and batch-encodes its documents with the Rust
   tokenizer (nothing written), (b) `prepare` with num_proc 1 and (c) with num_proc 2. Goal: prepare at
   num_proc 1 >= 0.8x the plain loop.
2. loader: the training data loader (`BlendDataset` over a two-source 70/30 blend of prepared shards) in
   tokens/s, against the tokens/s one training step of the tiny-hybrid parent consumes (forward and backward,
   bf16 autocast, the same batch shape). Goal: the loader is never the bottleneck (ratio >> 1).
3. memory: peak anonymous memory (RssAnon, polled every 5 ms: memory-mapped shard pages are file-backed and
   count in plain RSS only) of a short `pretrain` on a prepared corpus 1x vs 10x larger. Goal: within 10%.

    python benchmarks/data_speed.py [--parts prepare,loader,memory --repeats 3 --vocab 4096]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import RESULTS, machine, time_interleaved, write_json

from nemotron_elastic.config.prepare import PrepareConfig
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.data.corpus import default_corpus
from nemotron_elastic.data.prepare import prepare
from nemotron_elastic.data.tokenizer import encode_batch, train_bpe
from nemotron_elastic.io import load_tokenizer


def corpus_files(root: Path, docs: list[str], copies: int = 1) -> Path:
    """The documents as one jsonl file, `copies` times (each copy numbered, so no two documents are equal)."""
    path = root / f"corpus-x{copies}.jsonl"
    with path.open("w") as f:
        for c in range(copies):
            for d in docs:
                f.write(json.dumps({"text": d if c == 0 else f"[{c}] {d}"}) + "\n")
    return path


def bench_prepare(root: Path, data: Path, tokenizer, docs: list[str], repeats: int) -> dict:
    def plain() -> int:
        tokens = 0
        with data.open() as f:
            batch = []
            for line in f:
                batch.append(json.loads(line)["text"])
                if len(batch) == 256:
                    tokens += sum(len(ids) + 1 for ids in encode_batch(tokenizer, batch))
                    batch = []
            tokens += sum(len(ids) + 1 for ids in encode_batch(tokenizer, batch))
        return tokens

    def prepared(num_proc: int) -> int:
        out = root / f"out-{num_proc}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = from_dict(PrepareConfig, {"sources": [{"name": "corpus", "path": str(data)}], "num_proc": num_proc})
        manifest = prepare(cfg, root / "tok", out, progress=False)
        entry = manifest["sources"]["corpus"]
        return entry["train"]["tokens"] + entry["heldout"]["tokens"]

    runs = {"plain tokenizers loop": plain, "prepare num_proc 1": lambda: prepared(1),
            "prepare num_proc 2": lambda: prepared(2)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            tokens[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: tokens[k] / median[k] for k in runs}
    base = rate["plain tokenizers loop"]
    for k in runs:
        print(f"{k:<24} {rate[k]:>12,.0f} tokens/s  ({rate[k] / base:.2f}x the plain loop)")
    return {"documents": len(docs), "tokens": tokens, "seconds": median, "tokens_per_s": rate,
            "ratio_to_plain": {k: v / base for k, v in rate.items()}}


def bench_loader(root: Path, docs: list[str], seq: int, batch: int, repeats: int) -> dict:
    import torch

    from nemotron_elastic.config.data import DataConfig
    from nemotron_elastic.config.presets import get_preset
    from nemotron_elastic.config.schedule import StageConfig
    from nemotron_elastic.data.blend import BlendDataset
    from nemotron_elastic.data.run_data import resolve_data
    from nemotron_elastic.model import HybridLM

    half = len(docs) // 2
    files = [corpus_files(root / name, part) for name, part in (("a", docs[:half]), ("b", docs[half:]))
             if (root / name).mkdir(exist_ok=True) is None]
    cfg = from_dict(PrepareConfig, {"sources": [{"name": "a", "path": str(files[0])},
                                                {"name": "b", "path": str(files[1])}]})
    prepare(cfg, root / "tok", root / "blend", progress=False)
    tokenizer = load_tokenizer(root / "tok", required=True)
    data = from_dict(DataConfig, {"train": [{"path": str(root / "blend" / "a"), "weight": 0.7},
                                            {"path": str(root / "blend" / "b"), "weight": 0.3}]})
    run = resolve_data(data, [StageConfig(seq_len=seq, micro_batch=batch)], tokenizer, root / "tok", root / "work",
                       progress=False)
    streams, weights = run.stages[0]
    loader = BlendDataset(streams, weights, seq, batch, seed=0)
    model = HybridLM(get_preset("tiny-hybrid"))
    model.init_weights()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sample = next(loader).tokens

    def load() -> None:
        for _ in range(50):
            next(loader)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(sample[:, :-1]).float().log_softmax(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = time_interleaved({"loader (50 batches)": load, "train step": step}, repeats)
    tokens = batch * seq
    loader_rate, step_rate = 50 * tokens / times["loader (50 batches)"], tokens / times["train step"]
    print(f"loader {loader_rate:,.0f} tokens/s, tiny-hybrid training step {step_rate:,.0f} tokens/s: "
          f"{loader_rate / step_rate:,.0f}x what the step consumes")
    return {"seq_len": seq, "batch": batch, "blend": [0.7, 0.3], "loader_tokens_per_s": loader_rate,
            "step_tokens_per_s": step_rate, "loader_over_step": loader_rate / step_rate,
            "step_model": "tiny-hybrid, bf16 autocast, forward + backward + AdamW"}


def rss_anon(pid: int) -> int:
    """Anonymous resident memory of a process, in bytes (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bench_memory(root: Path, docs: list[str]) -> dict:
    import subprocess

    import yaml

    rows = {}
    for copies in (1, 10):
        data = corpus_files(root, docs, copies)
        cfg = from_dict(PrepareConfig, {"sources": [{"name": "corpus", "path": str(data)}]})
        prepared = root / f"prepared-x{copies}"
        manifest = prepare(cfg, root / "tok", prepared, progress=False)
        run = {"preset": "micro-hybrid", "tokenizer": str(root / "tok"), "out": str(root / f"run-x{copies}"),
               "data": {"train": str(prepared / "corpus"), "eval_tokens": 4096},
               "stages": [{"name": "pretrain", "steps": 30, "seq_len": 256, "micro_batch": 8, "grad_accum": 1}],
               "log_every": 10, "eval_every": 30, "save_every": 30}
        config = root / f"pretrain-x{copies}.yaml"
        config.write_text(yaml.safe_dump(run))
        proc = subprocess.Popen([sys.executable, "-m", "nemotron_elastic", "pretrain", "--config", str(config),
                                 "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, rss_anon(proc.pid))
            time.sleep(0.005)
        if proc.returncode:
            raise SystemExit(f"pretrain on the x{copies} corpus failed: {proc.stderr.read().decode()[-2000:]}")
        tokens = manifest["sources"]["corpus"]["train"]["tokens"]
        rows[f"x{copies}"] = {"training_tokens": tokens, "peak_rss_anon_bytes": peak}
        print(f"corpus x{copies}: {tokens:,} tokens, peak RssAnon {peak / 2**20:,.1f} MiB")
    ratio = rows["x10"]["peak_rss_anon_bytes"] / rows["x1"]["peak_rss_anon_bytes"]
    print(f"10x corpus / 1x corpus peak RssAnon: {ratio:.3f}")
    return {"runs": rows, "ratio_x10_to_x1": ratio, "run": "pretrain micro-hybrid, 30 steps of 8 x 256 tokens"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="prepare,loader,memory", help="comma-separated: prepare, loader, memory")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"prepare", "loader", "memory"})
    if unknown:
        ap.error(f"unknown parts {unknown}")
    root = Path(tempfile.mkdtemp(prefix="data_speed-"))
    docs = default_corpus("train")
    data = corpus_files(root, docs)
    train_bpe(docs[:500], args.vocab, out_dir=root / "tok")
    tokenizer = load_tokenizer(root / "tok", required=True)
    previous = RESULTS / "data_speed.json"  # parts not run now keep their last measurement
    kept = json.loads(previous.read_text()) if previous.is_file() else {}
    result = {k: kept[k] for k in ("prepare", "loader", "memory") if k in kept}
    result.update(benchmark="data_speed", machine=machine())
    try:
        if "prepare" in parts:
            result["prepare"] = bench_prepare(root, data, tokenizer, docs, args.repeats)
        if "loader" in parts:
            result["loader"] = bench_loader(root, docs, args.seq, args.batch, max(args.repeats, 5))
        if "memory" in parts:
            result["memory"] = bench_memory(root, docs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"written to {write_json('data_speed.json', result)}")


if __name__ == "__main__":
    main()
