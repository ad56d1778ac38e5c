# SPDX-License-Identifier: Apache-2.0
"""The shared training loop: stages, data, schedules, gradient accumulation, logging, evaluation and
exact-resume checkpoints. `ElasticTrainer` (router + multi-budget KD) and `PretrainTrainer` (plain LM loss)
supply the loss, the evaluation and the final output.

    for step in all stages' steps:
        set LR (warmup + cosine, one multiplier for every param group)
        for micro in grad_accum:   loss = self.micro_loss(batch, step, micro); (loss / grad_accum).backward()
        clip, optimizer step, log (tqdm with tokens/s; metrics.jsonl), evaluate, checkpoint
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any

import torch

from ..data.packed import PackedDataset, PackedTokens
from .metrics import MetricsWriter
from .sampling import lr_multiplier, stage_at
from .state import load_checkpoint, save_checkpoint


class Trainer(abc.ABC):
    """Subclasses set, in __init__: cfg (with stages, optim, seed, bf16, log/eval/save_every), out, device,
    model (trained), aux (a second trained module, e.g. the router, or an empty Module), optimizer,
    train_tokens, resume_from; and implement micro_loss, evaluate, finish."""

    cfg: Any
    out: Path
    device: torch.device
    model: torch.nn.Module
    aux: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_tokens: PackedTokens
    resume_from: Path | None
    progress: bool = True
    name: str = "train"

    def setup_common(self) -> None:
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        self.metrics = MetricsWriter(self.out)
        self.step = 0
        self.data_states: dict[str, Any] = {}

    # --- hooks -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def micro_loss(self, batch: torch.Tensor, step: int, micro: int, stage) -> tuple[torch.Tensor, str, dict]:
        """(loss, metrics group name, metrics) for one micro-batch (B, T+1)."""

    @abc.abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics, logged under split "eval"."""

    @abc.abstractmethod
    def finish(self) -> dict[str, Any]:
        """Write the run's final output; its return value is `fit()`'s."""

    # --- shared --------------------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def _dataset(self, stage_index: int) -> PackedDataset:
        stage = self.cfg.stages[stage_index]
        ds = PackedDataset(self.train_tokens, stage.seq_len, stage.micro_batch, seed=self.cfg.seed + stage_index)
        state = self.data_states.get(stage.name)
        if state is not None:
            ds.load_state_dict(state)
        return ds

    def total_steps(self) -> int:
        return sum(s.steps for s in self.cfg.stages)

    def fit(self, stop_at: int | None = None) -> dict[str, Any] | None:
        """Train to the end (then `finish()` and return its result), or stop after step `stop_at` with a
        checkpoint there (continue it with a new trainer built with `resume=True`)."""
        cfg, total = self.cfg, self.total_steps()
        window: dict[str, list[float]] = {}  # metrics since the last log line (part of the resume state)
        if self.resume_from is not None:
            state = load_checkpoint(self.resume_from, self.model, self.aux, self.optimizer, self.generator)
            self.step, self.data_states, window = state["step"], state["data"], state.get("window", {})
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=self.step, desc=self.name, disable=not self.progress, unit="step")
        datasets: dict[str, PackedDataset] = {}
        tokens_seen, t0 = 0, time.perf_counter()
        params = [p for p in list(self.model.parameters()) + list(self.aux.parameters()) if p.requires_grad]
        while self.step < total:
            index, stage = stage_at(cfg, self.step)
            if stage.name not in datasets:
                datasets[stage.name] = self._dataset(index)
            mult = lr_multiplier(self.step, total, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * mult
            for micro in range(stage.grad_accum):
                batch = next(datasets[stage.name]).to(self.device)
                loss, key, metrics = self.micro_loss(batch, self.step, micro, stage)
                (loss / stage.grad_accum).backward()
                for k, v in metrics.items():
                    window.setdefault(f"{key}/{k}" if key else k, []).append(v)
                tokens_seen += batch[:, :-1].numel()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            rate = tokens_seen / max(1e-9, time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(stage=stage.name, tok_s=f"{rate:.0f}")
            if self.step % cfg.log_every == 0 or self.step == total:
                row = {k: sum(v) / len(v) for k, v in window.items()}
                row.update(self.log_extra(self.step), lr=self.optimizer.param_groups[0]["lr"],
                           grad_norm=float(grad_norm), tokens_per_s=rate, stage=stage.name)
                self.metrics.write(self.step, "train", row)
                window = {}
            if self.step % cfg.eval_every == 0 or self.step == total:
                self.metrics.write(self.step, "eval", self.evaluate())
            stopping = stop_at is not None and self.step >= stop_at
            if (self.step % cfg.save_every == 0 or stopping) and self.step < total:
                states = dict(self.data_states)
                states.update({name: ds.state_dict() for name, ds in datasets.items()})
                save_checkpoint(self.out, self.step, self.model, self.aux, self.optimizer, self.generator,
                                {"data": states, "window": window})
            if stopping and self.step < total:
                bar.close()
                self.metrics.close()
                return None
        bar.close()
        result = self.finish()
        self.metrics.close()
        return result

    def log_extra(self, step: int) -> dict[str, float]:
        """Extra scalars for the training log (e.g. the router's temperature)."""
        return {}
