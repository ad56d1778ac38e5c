# SPDX-License-Identifier: Apache-2.0
"""One elastic micro-step: router decision -> masks -> student forward -> KD (+ CE) + budget loss.

    scores = router.scores(budget, tau, scale)           Gumbel-perturbed logits per axis; copied to the host
    teacher hidden (no grad, once per micro-batch)       queued on the device behind that copy
    probs  = softmax(scores)
    choice = within_budget(scores) | argmax              the sampled sub-model (router.decision), searched
                                                         on the host while the device runs the teacher
    masks  = to_masks(probs, hard|soft, choice)          the sub-model inside the student
    loss   = kd_weight * KL(teacher || student_masks) + ce_weight * CE + lambda * budget_loss(probs)

The student runs *sliced* to the chosen sizes (hard masks) so a budget-0.5 step costs about half a full
step (docs/DESIGN.md 3.4). Returns the loss to backpropagate and detached metrics.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.run import TrainConfig
from ..config.schedule import StageConfig
from ..model.hybrid import HybridLM
from ..model.masks import ElasticMasks
from ..router import budget_loss
from ..router.choices import to_masks
from ..router.decision import CostTable, decide
from ..router.menus import AxisMenu
from ..router.router import Router
from .losses import cross_entropy_chunked, kl_div_chunked
from .runtime import elastic_step_flops


@dataclass
class StepContext:
    """What a micro-step needs besides the batch (explicit, no globals)."""

    cfg: TrainConfig
    student: HybridLM
    teacher: HybridLM
    router: Router
    menus: dict[str, AxisMenu]
    costs: CostTable | None = None  # the menus' cost table when decisions are taken within the budget
    # called with a description of the sub-model each micro-step runs (cfg.check_decisions): ranks compare it
    check: Callable[[str, str], None] | None = None

    def memory_kwargs(self) -> dict:
        return memory_setting(self.cfg)


def memory_setting(cfg: TrainConfig) -> dict:
    """The memory budget's cost-model settings (context, batch, bytes per element)."""
    r = cfg.router
    return {
        "context": r.memory_context, "batch": r.memory_batch, "weight_bytes": r.memory_weight_bytes,
        "kv_bytes": r.memory_kv_bytes, "ssm_bytes": r.memory_ssm_bytes,
    }


def teacher_hidden(teacher: HybridLM, inputs: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's LM-head input (B, T, D), without grad."""
    with torch.no_grad():
        return teacher(inputs, return_hidden=True)


def elastic_loss(
    ctx: StepContext,
    tokens: torch.Tensor,
    budget: float,
    tau: float,
    scale: float,
    generator: torch.Generator | None = None,
    t_hidden: torch.Tensor | None = None,
    fixed: ElasticMasks | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """Loss of one micro-batch at one budget. tokens: (B, T+1) long (inputs and shifted targets); mask: (B, T)
    bool, the targets the KD and CE losses count (`data.loss_on: assistant`; None: all), each loss the mean
    over them.

    The metrics stay on the device as detached 0-dim tensors: reading them to the host would wait for the
    GPU at every micro-step; the loop reads them once per log interval.

    fixed: train this sub-model (sliced) instead of the router's choice; no router, no budget loss."""
    cfg = ctx.cfg
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    metrics: dict[str, torch.Tensor | float] = {}
    deciding = fixed is None and ctx.costs is not None and cfg.router.mask == "hard"
    if fixed is None:
        scores = ctx.router.scores(budget, tau, scale, gumbel=True, generator=generator)
        # The within-budget decision is a search on the host: its scores start their copy there now, the
        # teacher's forward is queued behind it, and the search runs while the GPU runs the teacher.
        host_scores = host_copy(scores) if deciding else None
    if t_hidden is None:
        t_hidden = teacher_hidden(ctx.teacher, inputs)
    if fixed is None:
        probs = {axis: F.softmax(s, dim=-1) for axis, s in scores.items()}
        choice = None
        if deciding:
            choice = decide(host_scores(), budget, ctx.costs, cfg.router.dead_zone)
            metrics["decision_ratio"] = ctx.costs.ratio(choice)
        masks = to_masks(ctx.student.config, ctx.menus, probs, cfg.router.mask, cfg.router.straight_through, choice)
    else:
        masks = fixed
    if ctx.check is not None:
        ctx.check(f"the sub-model of budget {budget:g}", describe(masks))
    s_hidden = ctx.student(inputs, subnet=masks, return_hidden=True, checkpoint_every=cfg.checkpoint_every)
    head = ctx.student.head_weight(masks)
    loss = torch.zeros((), device=tokens.device)
    if cfg.distill.kd_weight:
        kd = kl_div_chunked(s_hidden, head, t_hidden, ctx.teacher.lm_head.weight, cfg.distill.temperature,
                            cfg.distill.chunk_size, mask=mask)
        loss = loss + cfg.distill.kd_weight * kd
        metrics["kd"] = kd.detach()
    if cfg.distill.ce_weight:
        counted = targets if mask is None else targets.masked_fill(~mask, -100)
        ce = cross_entropy_chunked(s_hidden, head, counted, cfg.distill.chunk_size)
        loss = loss + cfg.distill.ce_weight * ce
        metrics["ce"] = ce.detach()
    if ctx.menus and fixed is None:
        memory = ctx.memory_kwargs() if cfg.router.budget_kind == "memory" else None
        cost_probs = probs
        if cfg.router.budget_probs == "unsharpened":
            cost_probs = ctx.router.probs(budget, tau=1.0, scale=1.0, gumbel=False)
        bl, ratio = budget_loss(ctx.student.config, ctx.menus, cost_probs, budget, cfg.router.budget_kind, memory,
                                cfg.router.dead_zone, cfg.router.full_pull)
        loss = loss + cfg.router.loss_weight * bl
        metrics["budget_loss"] = bl.detach()
        metrics["cost_ratio"] = ratio.detach()
    metrics["loss"] = loss.detach()
    share = 0.0 if cfg.checkpoint_every == 0 else 1.0 / cfg.checkpoint_every
    # a host float (the sizes are known on the host); the loop sums it for MFU and keeps it out of the log
    metrics["model_flops"] = elastic_step_flops(ctx.teacher.config, masks, inputs.numel(), inputs.shape[1], share)
    return loss, metrics


def host_copy(tensors: dict[str, torch.Tensor]) -> Callable[[], dict[str, torch.Tensor]]:
    """Start copying detached device tensors to the host without waiting; the returned function waits for
    the copy (only) and returns the host tensors. On the CPU it returns the detached tensors at once."""
    if all(t.device.type == "cpu" for t in tensors.values()):
        return lambda: {k: t.detach() for k, t in tensors.items()}
    host = {k: torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for k, t in tensors.items()}
    for k, t in tensors.items():
        host[k].copy_(t.detach(), non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def wait() -> dict[str, torch.Tensor]:
        done.synchronize()
        return host

    return wait


def describe(masks: ElasticMasks) -> str:
    """The sizes a micro-step runs: hidden, Mamba head dim, and each layer's width ("-": dropped)."""
    layers = ",".join("-" if m is None else str(m.width.size) for m in masks.layers)
    return f"hidden {masks.hidden.size}, head dim {masks.mamba_head_dim.size}, layers {layers}"


def sample_budget(cfg: TrainConfig, stage: StageConfig, step: int, draw: int) -> float:
    """The budget of budget draw `draw` of optimizer step `step`.

    One budget per draw (a micro-step, or with `global_batch` a fixed run of sequences), drawn from the
    current stage's weights with a seed that depends on (run seed, global step, draw) only, so every
    data-parallel rank trains the same budget at the same micro-step (as NVIDIA's
    `get_grad_acc_based_random_choice`), a resumed run draws the same budgets, and with `global_batch` so
    does a run on another number of processes. Budgets mix inside one optimizer step through gradient
    accumulation (docs/METHOD.md, the curriculum).
    """
    weights = stage.budget_weights or [1.0] * len(cfg.budgets)
    rng = random.Random(f"{cfg.seed}/{step}/{draw}")
    return rng.choices(cfg.budgets, weights=weights, k=1)[0]
