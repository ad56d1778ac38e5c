# SPDX-License-Identifier: Apache-2.0
"""`prepare` throughput against a plain `tokenizers` batch-encode loop over the same file, side by side.

The packaged default corpus (training split) is written once as a jsonl file; then, interleaved over
`--repeats` rounds, (a) a plain loop reads the file and batch-encodes its documents with the Rust tokenizer
(nothing written), (b) `prepare` with num_proc 1 and (c) with num_proc 2 write shards from it. Tokens/s and
the ratios to the plain loop go to benchmarks/results/data_speed.json (goal: prepare at num_proc 1 >= 0.8x
the plain loop).

    python benchmarks/data_speed.py [--repeats 3 --vocab 4096]
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
from _timing import machine, write_json  # noqa: E402

from nemotron_elastic.config.prepare import PrepareConfig  # noqa: E402
from nemotron_elastic.config.types import from_dict  # noqa: E402
from nemotron_elastic.data.corpus import default_corpus  # noqa: E402
from nemotron_elastic.data.prepare import prepare  # noqa: E402
from nemotron_elastic.data.tokenizer import encode_batch, train_bpe  # noqa: E402
from nemotron_elastic.io import load_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="data_speed-"))
    docs = default_corpus("train")
    data = root / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    train_bpe(docs[:500], args.vocab, out_dir=root / "tok")
    tokenizer = load_tokenizer(root / "tok", required=True)

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
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            tokens[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: tokens[k] / median[k] for k in runs}
    base = rate["plain tokenizers loop"]
    result = {"benchmark": "data_speed", "documents": len(docs), "tokens": tokens, "seconds": median,
              "tokens_per_s": rate, "ratio_to_plain": {k: v / base for k, v in rate.items()},
              "machine": machine()}
    for k in runs:
        print(f"{k:<24} {rate[k]:>12,.0f} tokens/s  ({rate[k] / base:.2f}x the plain loop)")
    print(f"written to {write_json('data_speed.json', result)}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
