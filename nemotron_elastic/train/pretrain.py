# SPDX-License-Identifier: Apache-2.0
"""Pretraining a small parent from scratch (`nemotron-elastic pretrain`): next-token cross-entropy with the
same loop, checkpoints, resume and metrics as elastic training. The result, `<out>/model`, is a native
checkpoint (with its tokenizer) that `score` and `train` take as the parent. Under torchrun the model is
replicated or FSDP2-sharded (`distributed.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.native import write_native_files
from ..config.data import blend_of
from ..config.model import ModelConfig
from ..config.presets import get_preset
from ..config.run import PretrainConfig
from ..config.types import from_dict, to_dict
from ..data.corpus import default_corpus
from ..data.documents import load_documents
from ..data.run_data import is_prepared
from ..data.tokenizer import ensure_bpe
from ..io import load_tokenizer
from ..model.hybrid import HybridLM
from .heldout import HeldoutSums, counted_targets, heldout_batches
from .loop import Trainer
from .losses import cross_entropy_chunked
from .runtime import elastic_step_flops, prepare_models


def resolve_model_config(cfg: PretrainConfig, vocab_size: int | None = None) -> ModelConfig:
    """The preset with `model` overrides; the vocabulary follows the tokenizer when one is given."""
    base = to_dict(get_preset(cfg.preset)) if cfg.preset else {}
    base.update(cfg.model or {})
    if vocab_size is not None:
        base["vocab_size"] = vocab_size
    return from_dict(ModelConfig, base, "model")


def _bpe_documents(cfg: PretrainConfig) -> tuple[Callable[[], list[str]], str]:
    """(documents to train the run's BPE on, a note on them): the default corpus, or raw `data.train` paths.
    Prepared sources hold token ids of some other tokenizer: a run on them names that tokenizer."""
    if cfg.data.train is None:
        return (lambda: default_corpus("train")), "default"
    paths = [part.path for part in blend_of(cfg.data.train, "data.train")]
    prepared = [p for p in paths if is_prepared(p)]
    if prepared:
        raise ValueError(f"tokenizer: data.train holds prepared sources ({prepared[0]}); give the tokenizer they "
                         "were prepared with (tokenizer: FOLDER)")
    return (lambda: [doc for p in paths for doc in load_documents(p)]), ", ".join(paths)


class PretrainTrainer(Trainer):
    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True):
        self.start_run(cfg, progress)
        with self.removed_on_failure():  # a start that fails leaves no run folder behind
            model_cfg = resolve_model_config(cfg)  # validates the model section before anything is written
            self.resume_from = self.prepare_run(resume, overwrite)
            if cfg.tokenizer is not None:
                self.tokenizer = load_tokenizer(cfg.tokenizer, required=True)
                tokenizer_dir = Path(cfg.tokenizer)
            else:
                docs, source = _bpe_documents(cfg)
                self.tokenizer = self.dist.main_first(  # rank 0 trains and saves it, the others load it
                    lambda: ensure_bpe(self.out / "tokenizer", model_cfg.vocab_size, docs, source)
                )
                tokenizer_dir = self.out / "tokenizer"
            model_cfg = dataclasses.replace(model_cfg, vocab_size=len(self.tokenizer),
                                            bos_token_id=self.tokenizer.bos_token_id,
                                            eos_token_id=self.tokenizer.eos_token_id,
                                            pad_token_id=self.tokenizer.pad_token_id)
            self.model = HybridLM(model_cfg).to(self.dist.init_device)
            self.model.init_weights()
            self.dist.wrap_trained(self.model)  # before the optimizer: FSDP2 replaces the parameters
            prepare_models(cfg, self.device, self.model)
            self.aux = torch.nn.Module()
            o = cfg.optim
            decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
            no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
            self.optimizer = torch.optim.AdamW(
                [{"params": decay, "lr": o.lr, "weight_decay": o.weight_decay},
                 {"params": no_decay, "lr": o.lr, "weight_decay": 0.0}],
                betas=(o.beta1, o.beta2),
            )
            self.open_data(self.tokenizer, tokenizer_dir, "the run")
            self.setup_common()

    def micro_loss(self, batch, step, draw, stage, mask=None):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        if mask is not None:  # data.loss_on: assistant
            targets = targets.masked_fill(~mask, -100)
        with self.autocast():
            hidden = self.model(inputs, return_hidden=True, checkpoint_every=self.cfg.checkpoint_every)
        loss = cross_entropy_chunked(hidden, self.model.head_weight(), targets)
        share = 0.0 if self.cfg.checkpoint_every == 0 else 1.0 / self.cfg.checkpoint_every
        flops = elastic_step_flops(self.model.config, None, inputs.numel(), inputs.shape[1], share)
        return loss, "", {"loss": loss.detach(), "model_flops": flops}  # loss read on the host at log time only

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        self.model.eval()
        sums = HeldoutSums()
        for source, batch in heldout_batches(self.run_data, self.cfg.stages[0].seq_len, self.cfg.data.eval_tokens,
                                             self.device):
            targets, count = counted_targets(batch)
            with self.autocast():
                hidden = self.model(batch.tokens[:, :-1], return_hidden=True)
            sums.add(source, {"ce": float(cross_entropy_chunked(hidden.float(), self.model.head_weight(), targets))},
                     count)
        self.model.train()
        return sums.result()

    def finish(self) -> dict[str, Any]:
        """Write `<out>/model` (rank 0) and return the final held-out metrics (every rank)."""
        result = self._evaluate()
        self.publish(self.out / "model", lambda folder: write_native_files(folder, self.model.config, self.tokenizer))
        return result
