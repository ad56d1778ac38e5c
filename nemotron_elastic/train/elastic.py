# SPDX-License-Identifier: Apache-2.0
"""Elastic training (`nemotron-elastic train`): the router and the parent's weights trained together by
multi-budget knowledge distillation from the frozen parent, over a curriculum of stages.

    per budget draw: budget ~ stage weights (same on every rank; a draw covers one or more micro-batches)
                     loss = KD(teacher || student at the router's sub-model) + lambda * budget loss
    every eval_every steps: each budget's argmax sub-model on held-out tokens (KD, LM loss, perplexity)
    at the end: the elastic checkpoint `<out>/model` (weights, router, per-budget specs and costs)

The loop itself (accumulation, schedules, logging, exact-resume checkpoints) is `loop.Trainer`; under
torchrun the student is replicated or FSDP2-sharded and the frozen teacher sharded the same way
(`distributed.py`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.elastic import write_elastic_files
from ..checkpoint.native import peek_config, write_native_files
from ..config.run import TrainConfig
from ..config.spec import resolve_spec
from ..io import load_tokenizer
from ..model.masks import ElasticMasks
from ..router.budget_loss import cost_of
from ..router.choices import to_spec
from ..router.decision import CostTable, decide, within_budget
from ..router.menus import menus_from_config
from ..router.router import Router, logit_scale, temperature
from ..subnet.cost import Sizes
from .distributed import check_same
from .heldout import HeldoutSums, counted_targets, heldout_batches
from .loop import Trainer
from .losses import cross_entropy_chunked, kl_div_chunked
from .plan import check_state_fits
from .runtime import prepare_models
from .step import StepContext, elastic_loss, memory_setting, sample_budget, teacher_hidden


class ElasticTrainer(Trainer):
    """Builds everything from a TrainConfig (failing on bad input before any training);
    `fit()` trains and writes the elastic checkpoint."""

    name = "train"

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True):
        self.start_run(cfg, progress)
        with self.removed_on_failure():  # a start that fails leaves no run folder behind
            parent_dir = Path(cfg.parent)
            teacher_dtype = getattr(torch, cfg.distill.teacher_dtype)
            parent_config = peek_config(parent_dir)
            if self.device.type == "cuda" and parent_config is not None:  # refused before anything is allocated
                check_state_fits(cfg, parent_config, self.dist.world_size,
                                 torch.cuda.get_device_properties(self.device).total_memory)
            # Under fsdp each rank reads only its own rows of the parent: for the teacher here, for the
            # student below. Otherwise the student is a float32 copy of the teacher, cast afterwards.
            self.teacher = self.dist.load_model(parent_dir, teacher_dtype if self.dist.fsdp else torch.float32)
            self.teacher.eval().requires_grad_(False)
            self.tokenizer = load_tokenizer(parent_dir)
            if self.tokenizer is None:
                raise ValueError(f"{parent_dir}: the parent has no tokenizer files")
            self.ranking = parent_dir / "ranking.json"
            menus = menus_from_config(self.teacher.config, cfg.menus, self.ranking if self.ranking.is_file() else None,
                                      cfg.router.exportable)
            self.menus = {m.axis: m for m in menus}
            self.fixed = self._fixed_specs()  # before the run folder is touched: a bad spec file fails first
            # realised once here rather than from the spec at every micro-step
            self.fixed_masks = None if self.fixed is None else {
                b: ElasticMasks.from_spec(spec) for b, spec in self.fixed.items()
            }
            self.costs = self._cost_table()
            self.resume_from = self.prepare_run(resume, overwrite)
            if self.dist.fsdp:
                self.model = self.dist.load_model(parent_dir, torch.float32)
            else:
                self.model = copy.deepcopy(self.teacher)
                self.teacher.to(teacher_dtype)
            self.model.requires_grad_(True).train()  # the student, float32
            self.aux = self.router = Router(menus, cfg.budgets, cfg.router.hidden_dim, cfg.router.init_std).to(self.device)
            # Before the optimizer: FSDP2 replaces the parameters by sharded ones.
            self.dist.wrap_trained(self.model)
            self.dist.replicate(self.router)  # tiny: a whole copy per rank, gradients all-reduced
            self.frozen = (self.dist.wrap_frozen(self.teacher),)
            prepare_models(cfg, self.device, self.model, self.teacher)  # kernels (and compile) for both
            o = cfg.optim
            self.optimizer = torch.optim.AdamW(
                [
                    {"params": list(self.model.parameters()), "lr": o.lr, "weight_decay": o.weight_decay},
                    {"params": list(self.router.parameters()), "lr": cfg.router.lr, "weight_decay": 0.0},
                ],
                betas=(o.beta1, o.beta2),
            )
            self.open_data(self.tokenizer, parent_dir, "the parent")
            within = cfg.router.decision == "within_budget"
            self.ctx = StepContext(cfg, self.model, self.teacher, self.router, self.menus, self.costs if within else None,
                                   check_same if cfg.check_decisions else None)
            self.setup_common()

    def _fixed_specs(self) -> dict[float, Any] | None:
        """`specs:` of the config, validated against the parent: {budget: SubnetSpec}, or None (router)."""
        if self.cfg.specs is None:
            return None

        return {b: resolve_spec(self.teacher.config, path, f"specs[{i}]")
                for i, (b, path) in enumerate(zip(self.cfg.budgets, self.cfg.specs))}

    def _cost_table(self) -> CostTable | None:
        """The menus' exact cost table (None without a router), after checking that every budget has a
        sub-model within its dead zone: a budget the menus cannot reach is an error before training."""
        if self.fixed is not None or not self.menus:
            return None
        r = self.cfg.router
        memory = memory_setting(self.cfg) if r.budget_kind == "memory" else None
        table = CostTable(self.teacher.config, self.menus, r.budget_kind, memory)
        flat = {axis: torch.zeros(m.num_rows if m.per_layer else 1, m.num_choices) for axis, m in self.menus.items()}
        for b in self.cfg.budgets:
            if within_budget(table, flat, b, r.dead_zone) is None:
                lo, hi = table.span()
                raise ValueError(
                    f"budgets: no sub-model of these menus costs within {r.dead_zone:.0%} of budget {b:g} "
                    f"({r.budget_kind}); the menus span {lo:.3f} to {hi:.3f} of the parent"
                )
        return table

    def schedules(self, step: int) -> tuple[float, float]:
        """(Gumbel temperature, logit scale) at `step`: exponential 1 -> 0.05, linear 1 -> 10 (docs/METHOD.md 7.2)."""
        r, last = self.cfg.router, max(1, self.total_steps() - 1)  # the end values are reached at the last step
        return (temperature(step, last, r.tau_start, r.tau_end), logit_scale(step, last, r.scale_start, r.scale_end))

    def log_extra(self, step: int) -> dict[str, float]:
        tau, scale = self.schedules(step)
        return {"tau": tau, "logit_scale": scale}

    def micro_loss(self, batch, step, draw, stage, mask=None):
        budget = sample_budget(self.cfg, stage, step, draw)
        tau, scale = self.schedules(step)
        with self.autocast():
            fixed = None if self.fixed_masks is None else self.fixed_masks[budget]
            loss, metrics = elastic_loss(self.ctx, batch, budget, tau, scale, self.generator, fixed=fixed, mask=mask)
        return loss, f"{budget:g}", metrics

    def budget_specs(self) -> dict[float, Any]:
        """The router's deterministic choice per trained budget, from its logits (within the budget, or the
        argmax: `router.decision`), or the fixed specs."""
        if self.fixed is not None:
            return dict(self.fixed)
        table = self.ctx.costs
        out = {}
        with torch.no_grad():
            for b in self.cfg.budgets:
                logits = self.router.logits(b)
                choice = decide(logits, b, table, self.cfg.router.dead_zone)
                out[b] = to_spec(self.model.config, self.menus, logits, choice)
        return out

    @torch.no_grad()
    def evaluate(self, before: bool = False) -> dict[str, dict[str, float]]:
        """Held-out KD loss, LM loss and perplexity of every budget's argmax sub-model.

        before: evaluate the same specs cut from the frozen parent (the model before elastic training)
        instead of the student, the baseline every budget should beat.

        Every rank evaluates the same windows (identical results): FSDP forwards are collectives, so the
        ranks must run them in lockstep. `head_weight` and the teacher's head are read right after their
        forwards, while the FSDP roots are still unsharded."""
        model = self.teacher if before else self.model
        self.model.eval()
        full = self.model.config.num_parameters()
        results = {}
        for budget, spec in self.budget_specs().items():
            sums = HeldoutSums()
            for source, batch in heldout_batches(self.run_data, self.cfg.stages[0].seq_len, self.cfg.data.eval_tokens,
                                                 self.device):
                inputs = batch.tokens[:, :-1]
                targets, count = counted_targets(batch)
                with self.autocast():
                    t_h = teacher_hidden(self.teacher, inputs)
                    s_h = model(inputs, subnet=spec, return_hidden=True)
                head = model.head_weight(spec).float()  # a bfloat16 teacher's too: the losses run in float32
                t_head = self.teacher.lm_head.weight.float()
                kd = float(kl_div_chunked(s_h.float(), head, t_h.float(), t_head, mask=batch.loss_mask))
                sums.add(source, {"kd": kd, "ce": float(cross_entropy_chunked(s_h.float(), head, targets))}, count)
            results[f"{budget:g}"] = {**sums.result(), "params": spec.param_count(),
                                      "param_ratio": spec.param_count() / full}
        self.model.train()
        return results

    def finish(self) -> dict[str, Any]:
        """Write the elastic checkpoint `<out>/model` with each budget's spec and costs (rank 0 writes;
        every rank returns the same info)."""
        full = self.model.config.num_parameters()
        memory = self.ctx.memory_kwargs()
        full_memory = cost_of(self.model.config, Sizes.full(self.model.config), "memory", memory)
        budgets = []
        for budget, spec in self.budget_specs().items():
            mem = cost_of(spec.parent, Sizes.from_spec(spec), "memory", memory)
            budgets.append({"budget": budget, "spec": spec.to_dict(), "params": spec.param_count(),
                            "param_ratio": spec.param_count() / full, "memory_bytes": float(mem),
                            "memory_ratio": float(mem / full_memory)})
        info = {"budget_kind": self.cfg.router.budget_kind, "memory_setting": memory, "budgets": budgets,
                "fixed_specs": self.fixed is not None, "decision": self.cfg.router.decision,
                "dead_zone": self.cfg.router.dead_zone,
                "final_eval": self._evaluate(), "before_training_eval": self._evaluate(before=True)}
        def write_files(folder: Path) -> None:
            write_native_files(folder, self.model.config, self.tokenizer)
            write_elastic_files(folder, self.router, info, self.cfg, self.ranking if self.ranking.is_file() else None)

        self.publish(self.out / "model", write_files)
        return info
