# SPDX-License-Identifier: Apache-2.0
"""Pipeline commands: pretrain (a small parent from scratch) and train (elastic: router + multi-budget KD)."""

from __future__ import annotations

import argparse
import json
from typing import Any

EPILOGS = {
    "pretrain": """examples:
  nemotron-elastic pretrain --config configs/pretrain-tiny.yaml
  nemotron-elastic pretrain --config configs/pretrain-tiny.yaml out=runs/p2 'stages=[{steps: 200}]'
  nemotron-elastic pretrain --config configs/pretrain-tiny.yaml --resume""",
    "train": """examples:
  nemotron-elastic train --config configs/elastic-tiny.yaml
  nemotron-elastic train --config configs/elastic-tiny.yaml parent=runs/my-scored out=runs/e2 router.lr=5e-3
  nemotron-elastic train --config configs/elastic-tiny.yaml --resume
  torchrun --nproc_per_node 8 -m nemotron_elastic train --config configs/nano-12b-v2-elastic.yaml""",
}


def _run(args: argparse.Namespace, config_cls: Any, trainer_cls: Any) -> int:
    from ..configio import load_yaml

    cfg = load_yaml(config_cls, args.config, args.overrides)
    trainer = trainer_cls(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    result = trainer.fit()
    from ..train.distributed import is_main

    if is_main():  # under torchrun only rank 0 reports
        print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a parent from scratch; writes <out>/model."""
    from ..train.config import PretrainConfig
    from ..train.pretrain import PretrainTrainer

    return _run(args, PretrainConfig, PretrainTrainer)


def cmd_train(args: argparse.Namespace) -> int:
    """Elastic training; writes the elastic checkpoint <out>/model."""
    from ..train.config import TrainConfig
    from ..train.loop import ElasticTrainer

    return _run(args, TrainConfig, ElasticTrainer)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-4")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in `out` from its last checkpoint")
    group.add_argument("--overwrite", action="store_true", help="discard a previous run in `out`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(add: Any) -> None:
    _run_arguments(add("pretrain", cmd_pretrain, "Pretrain a small hybrid parent from scratch (plain LM loss)."))
    _run_arguments(add("train", cmd_train, "Elastic training: router + multi-budget KD from the frozen parent."))
