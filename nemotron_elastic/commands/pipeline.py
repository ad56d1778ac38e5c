# SPDX-License-Identifier: Apache-2.0
"""Pipeline commands: prepare (documents -> token shards), score (importance + reordering), pretrain (a small
parent from scratch), train (elastic: router + multi-budget KD) and plan (per-GPU memory of a training config,
before launching).

What a command runs is imported inside its `cmd_` function, so that `--help` never imports torch.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config.run import PretrainConfig, TrainConfig
from ..config.yaml_io import load_yaml
from ..io import write_json
from .common import add_device_args, positive_int, resolve_device

EPILOGS = {
    "prepare": """Writes OUT/<source>/{train,heldout}-NNNNN.bin/.idx token shards (documents + EOS, uint16 or uint32)
and OUT/manifest.json (documents and tokens per source, the tokenizer's fingerprint, the config). A killed
prepare resumes where it stopped and writes the same bytes.

config (YAML):
  sources:
    - {name: chat, path: data/chat.jsonl, format: messages}   # rendered with the tokenizer's chat template
    - {name: web, path: data/web.parquet, format: text, field: text, min_chars: 200}
  heldout_fraction: 0.01
  num_proc: 2

examples:
  nemotron-elastic prepare --config data.yaml --tokenizer runs/parent-scored --out data/prepared""",
    "score": """Writes OUT: the parent with its weights sorted by importance (every sub-model is then a prefix on
every axis; the function is unchanged) and OUT/ranking.json (per axis the order and scores; depth: the drop
order and the per-step normalized-MSE scores).

examples:
  nemotron-elastic score --model runs/parent/model --data corpus.jsonl --out runs/parent-scored
  nemotron-elastic score --model runs/smollm2 --data texts/ --samples 32 --seq-len 256 --bf16 --out runs/s""",
    "pretrain": """examples:
  nemotron-elastic pretrain --config configs/pretrain-tiny.yaml
  nemotron-elastic pretrain --config configs/pretrain-tiny.yaml out=runs/p2 'stages=[{steps: 200}]'
  nemotron-elastic pretrain --config configs/pretrain-tiny.yaml --resume""",
    "train": """examples:
  nemotron-elastic train --config configs/elastic-tiny.yaml
  nemotron-elastic train --config configs/elastic-tiny.yaml parent=runs/my-scored out=runs/e2 router.lr=5e-3
  nemotron-elastic train --config configs/elastic-tiny.yaml --resume
  torchrun --nproc_per_node 8 -m nemotron_elastic train --config configs/nano-12b-v2-elastic.yaml""",
    "plan": """Nothing is loaded or allocated: weights are shapes on the meta device, activations are measured by
running the student's forward on fake tensors (shapes and dtypes only). The parent's architecture comes
from its config.yaml, or from --model (a preset name or a model folder) when the parent is not on this
machine.

examples:
  nemotron-elastic plan --config configs/elastic-tiny.yaml --gpus 1
  nemotron-elastic plan --config configs/nano-12b-v2-elastic.yaml --model nemotron-nano-12b-v2 --gpus 64 \\
      --gpu-memory 80 dist=fsdp activation_checkpointing=blocks""",
}


def _run(args: argparse.Namespace, config_cls: Any, trainer_cls: Any) -> int:
    cfg = load_yaml(config_cls, args.config, args.overrides)
    trainer = trainer_cls(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    result = trainer.fit()
    from ..train.distributed import is_main

    if is_main():  # under torchrun only rank 0 reports
        print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a parent from scratch; writes <out>/model."""
    from ..train.pretrain import PretrainTrainer

    return _run(args, PretrainConfig, PretrainTrainer)


def cmd_train(args: argparse.Namespace) -> int:
    """Elastic training; writes the elastic checkpoint <out>/model."""
    from ..train.elastic import ElasticTrainer

    return _run(args, TrainConfig, ElasticTrainer)


def cmd_plan(args: argparse.Namespace) -> int:
    """Per-GPU memory and FLOPs of a training config at a world size."""
    from ..checkpoint.native import peek_config
    from ..config.presets import get_preset, list_presets
    from ..train.plan import format_plan, plan_training

    cfg = load_yaml(TrainConfig, args.config, args.overrides)
    source = args.model or cfg.parent
    parent = get_preset(source) if source in list_presets() else peek_config(source)
    if parent is None:
        raise ValueError(f"{source}: no native config.yaml there; pass --model PRESET (one of "
                         f"{', '.join(list_presets())}) or a native model folder")
    plan = plan_training(cfg, parent, args.gpus, args.gpu_memory)
    print(format_plan(plan))
    if args.json:
        write_json(args.json, plan)
    return 0 if plan["fits"] is not False else 1


def cmd_score(args: argparse.Namespace) -> int:
    """Importance scores on calibration data, then the function-preserving reordering."""
    device, dtype = resolve_device(args)  # first: a missing device is refused before anything is read
    from ..importance.pipeline import score_model

    out = score_model(
        args.model, args.data, args.out, samples=args.samples, seq_len=args.seq_len,
        depth_samples=args.depth_samples, max_depth_drops=args.max_depth_drops, seed=args.seed,
        mlp_point=args.mlp_point, attention_point=args.attention_point, mamba_point=args.mamba_point,
        bf16=args.bf16, progress=not args.quiet, overwrite=args.overwrite, device=device, dtype=dtype,
    )  # fmt: skip
    print(f"scored {args.model} -> {out} (reordered parent + ranking.json)")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..config.prepare import PrepareConfig
    from ..data.prepare import prepare  # deferred: --help stays free of torch

    cfg = load_yaml(PrepareConfig, args.config, args.overrides)
    manifest = prepare(cfg, args.tokenizer, args.out, progress=not args.quiet)
    for name, s in manifest["sources"].items():
        print(f"{name}: {s['train']['documents']:,} documents / {s['train']['tokens']:,} tokens for training, "
              f"{s['heldout']['documents']:,} held out, {s['skipped']:,} skipped")
    print(f"prepared -> {args.out}/manifest.json")
    return 0


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-4")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in `out` from its last checkpoint")
    group.add_argument("--overwrite", action="store_true", help="discard a previous run in `out`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(add: Any) -> None:
    p = add("prepare", cmd_prepare, "Tokenize data sources into token shards once, before training.")
    p.add_argument("--config", required=True, metavar="FILE", help="YAML: sources, heldout_fraction, num_proc, seed")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. num_proc=4")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="a model folder with the tokenizer (the parent)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the shards go (a rerun resumes there)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = add("score", cmd_score, "Importance of every width axis and of depth; reorder the parent by it.")
    p.add_argument("--model", required=True, metavar="DIR", help="the parent (native, HF folder or .gguf)")
    p.add_argument("--data", required=True, metavar="PATH", help="calibration text: .txt / .jsonl / .parquet or a folder")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--samples", type=int, default=64, metavar="N", help="calibration windows (default 64)")
    p.add_argument("--seq-len", type=int, default=512, metavar="L", help="tokens per window (default 512)")
    p.add_argument("--depth-samples", type=int, default=8, metavar="N", help="windows for depth scoring (default 8)")
    p.add_argument("--max-depth-drops", type=int, metavar="K", help="greedy depth steps (default: all layers)")
    p.add_argument("--mlp-point", choices=("post", "pre"), default="post",
                   help="MLP neuron score on the activation's output (default) or input (the paper)")
    p.add_argument("--attention-point", choices=("head_output", "o_proj_input"), default="head_output",
                   help="attention head score: each head's contribution to the residual (default) or o_proj's input")
    p.add_argument("--mamba-point", choices=("out_proj_input", "x"), default="out_proj_input",
                   help="Mamba head / channel score: out_proj's input (default) or in_proj's x branch (the paper)")
    p.add_argument("--seed", type=int, default=0, help="calibration draw seed")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the scoring forwards")
    add_device_args(p, "parameter dtype of the scoring forwards; the saved parent keeps its stored dtype "
                       "(default: bfloat16 on CUDA; on CPU as stored)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _run_arguments(add("pretrain", cmd_pretrain, "Pretrain a small hybrid parent from scratch (plain LM loss)."))
    _run_arguments(add("train", cmd_train, "Elastic training: router + multi-budget KD from the frozen parent."))
    p = add("plan", cmd_plan, "Per-GPU memory (item by item, per stage) and FLOPs of a training config.")
    p.add_argument("--config", required=True, metavar="FILE", help="YAML train config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. dist=fsdp")
    p.add_argument("--gpus", type=positive_int, default=1, metavar="N", help="processes / GPUs (default 1)")
    p.add_argument("--gpu-memory", type=float, metavar="GiB", help="memory of one GPU: say whether it fits")
    p.add_argument("--model", metavar="PRESET|DIR", help="the parent's architecture (default: the config's parent)")
    p.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
