# SPDX-License-Identifier: Apache-2.0
"""Per-GPU memory and FLOPs of a training config at a world size, before anything is launched
(`nemotron-elastic plan`).

Nothing is allocated: parameter shapes come from a model built on the meta device, and activations are
*measured*, not estimated by formula. The student's forward (and the KD loss) runs under
`FakeTensorMode`: every operator computes only shapes and dtypes, on tensors that claim to live on the CPU,
so the same kernels are chosen as in a real run (SDPA's flash path included) and autograd saves the same
tensors. `saved_tensors_hooks` counts the distinct storages saved for backward, parameters left out. This
takes seconds for the 12B parent at 49K context.

Items per GPU (bytes):

    student        fp32 master weights, sharded by FSDP2 along dim 0 (padded to the world size), or whole (ddp)
    gradients      as the student's weights
    optimizer      AdamW's two fp32 moments and a step counter per parameter
    router         the router's weights, gradients and optimizer state (replicated; fp32)
    teacher        the frozen teacher (fp32, or bf16 with `distill.teacher_dtype`), sharded like the student
    unsharded      fsdp: the unsharded root (embeddings, norm_f, lm_head) of student and teacher, and the two
                   largest blocks of each (the block running and the one prefetched)
    activations    per stage: saved for backward at the stage's micro-batch and context, for the full model
                   (the largest sub-model any budget can pick), under the run's bf16 autocast and activation
                   checkpointing; with checkpointing, plus the peak of one block recomputed in backward
    kd chunk       the peak of one chunk of the KD loss, recomputed in backward (logits, log-probabilities)
    teacher hidden the teacher's last hidden state of a micro-batch, kept for the KD loss

On a GPU the Mamba scan may run a fused kernel that saves other tensors than the pure-PyTorch scan
measured here; CUDA's allocator adds fragmentation and its context a few hundred MB
(`docs/DESIGN.md 3.8`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..config.model import ModelConfig
from ..config.run import TrainConfig
from ..config.schedule import StageConfig, accumulations
from ..config.spec import SubnetSpec
from ..model.attention import rope_cos_sin
from ..model.hybrid import HybridLM
from ..model.masks import ElasticMasks
from ..router.menus import menus_from_config
from ..router.router import Router
from .fsdp import float32_params
from .losses import kl_chunk_sum

GiB = 2**30


def saved_bytes(fn: Callable[[], Any], exclude: set[int] = frozenset()) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn` runs.

    exclude: storages not to count (`storage_ids(params)`): parameters are counted as weights, not here.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in exclude:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def storage_ids(tensors) -> set[int]:
    return {t.untyped_storage()._cdata for t in tensors}


def activation_bytes(
    model: HybridLM,
    batch: int,
    seq_len: int,
    spec: SubnetSpec | None = None,
    checkpoint_every: int = 0,
    bf16: bool = False,
) -> dict[str, int]:
    """Activation memory of one micro-batch of `model` (the student forward to its last hidden state).

    Runs on whatever tensors `model` holds: real ones (the reference), or fake ones under `FakeTensorMode`
    (the plan). Returns {"saved": bytes saved for backward, "recompute": the peak of the largest
    checkpointed block while it runs again in backward (0 without checkpointing), "total"}.
    """
    params = storage_ids(model.parameters())
    masks = None if spec is None else ElasticMasks.from_spec(spec)
    ids = torch.zeros(batch, seq_len, dtype=torch.long)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def forward() -> None:
        with autocast:
            model(ids, subnet=masks, return_hidden=True, checkpoint_every=checkpoint_every)

    saved = saved_bytes(forward, params)
    recompute = 0
    if checkpoint_every > 0:
        width = model.config.hidden_size if masks is None else masks.hidden.size
        h = torch.zeros(batch, seq_len, width, dtype=torch.bfloat16 if bf16 else torch.float32)
        rope = None
        if model.config.rope_theta is not None:
            rope = rope_cos_sin(torch.arange(seq_len), model.config.head_dim, model.config.rope_theta, h.dtype)
        for i, block in enumerate(model.layers):
            layer = None if masks is None else masks.layers[i]
            if i % checkpoint_every or (masks is not None and layer is None):
                continue
            x = h.detach().requires_grad_(True)

            def run(block=block, x=x, layer=layer) -> None:
                with autocast:
                    block(x, rope, None, masks, layer)

            recompute = max(recompute, saved_bytes(run, params | storage_ids([x])))
    return {"saved": saved, "recompute": recompute, "total": saved + recompute}


def kd_chunk_bytes(model: HybridLM, tokens: int, chunk_size: int) -> int:
    """Peak of one KD chunk recomputed in backward: its logits and log-probabilities (fp32)."""
    n = min(tokens, chunk_size)
    d, head = model.config.hidden_size, model.lm_head.weight
    s_h = torch.zeros(n, d, requires_grad=True)
    t_h = torch.zeros(n, d)
    return saved_bytes(lambda: kl_chunk_sum(s_h, head, t_h, head, 1.0, torch.ones(n)), storage_ids([head, s_h]))


def _sharded_bytes(tensors, world: int, element_bytes: int) -> int:
    """Bytes per rank of `tensors` sharded on dim 0 as FSDP2 does (each padded to a multiple of `world`)."""
    total = 0
    for t in tensors:
        rows = t.shape[0] if t.dim() else 1
        total += math.ceil(rows / world) * (t.numel() // max(rows, 1)) * element_bytes
    return total


def _block_sizes(model: HybridLM) -> list[int]:
    """Parameters (elements) of each block."""
    return [sum(p.numel() for p in block.parameters()) for block in model.layers]


def plan_training(cfg: TrainConfig, parent: ModelConfig, gpus: int, gpu_memory_gib: float | None = None) -> dict:
    """The per-GPU memory of `cfg` on `gpus` processes, item by item and per stage, and FLOPs per step.

    Returns a JSON-able dict: "static" (bytes), "stages" (per stage: activations and the total), "peak",
    "fits" (None without a GPU size), "advice" (the knob to turn when it does not fit).
    """
    if gpus < 1:
        raise ValueError(f"gpus: must be >= 1, got {gpus}")
    accumulations(cfg, gpus)  # a global batch that does not split over the GPUs: the config's own error
    fsdp = cfg.dist.strategy == "fsdp"
    world = min(gpus, cfg.dist.shard_size or gpus) if fsdp else 1  # ranks that share one copy of the state
    with torch.device("meta"):
        meta = HybridLM(parent)
        # the depth menu needs the parent's ranking only for its order, not for the router's size
        menus = menus_from_config(parent, dataclasses.replace(cfg.menus, depth=None), None, cfg.router.exportable)
        router = Router(menus, cfg.budgets, cfg.router.hidden_dim)
    params = list(meta.parameters())
    router_params = list(router.parameters())
    weights = _sharded_bytes(params, world, 4)
    teacher_bytes = 2 if cfg.distill.teacher_dtype == "bfloat16" else 4
    static = {
        "student": weights,
        "gradients": weights,
        "optimizer": 2 * weights + 4 * len(params),
        "router": 16 * sum(p.numel() for p in router_params) + 4 * len(router_params),
        "teacher": _sharded_bytes(params, world, teacher_bytes),
        "unsharded": 0,
    }
    if fsdp and world > 1:
        root = sum(p.numel() for n, p in meta.named_parameters() if not n.startswith("layers."))
        largest = sum(sorted(_block_sizes(meta))[-2:])  # elements of the two largest blocks
        # the student's and the teacher's, all-gathered in bfloat16 under the bf16 policy (train/fsdp.py)
        gathered = 2 + 2 if cfg.bf16 else 4 + teacher_bytes
        static["unsharded"] = gathered * (root + largest)
    stages = {}
    for stage in cfg.stages:
        stages[stage.name] = _stage_plan(cfg, parent, stage, gpus)
    static_total = sum(static.values())
    for row in stages.values():
        row["total"] = static_total + row["activations"] + row["teacher_hidden"] + row["kd_chunk"]
    peak = max(row["total"] for row in stages.values())
    fits = None if gpu_memory_gib is None else peak <= gpu_memory_gib * GiB
    return {
        "gpus": gpus, "dist": cfg.dist.strategy, "shard_size": world, "parameters": parent.num_parameters(), "static": static,
        "stages": stages, "peak": peak, "gpu_memory_gib": gpu_memory_gib, "fits": fits,
        "advice": None if fits in (None, True) else _advice(cfg, static, stages, gpus),
    }


def check_state_fits(cfg: TrainConfig, parent: ModelConfig, gpus: int, capacity: int) -> None:
    """Refuse, before anything is allocated, a run whose training state alone (weights, gradients, AdamW
    state, teacher: exact byte counts) exceeds `capacity` bytes per GPU; activations come on top.

    Raises:
        ValueError: naming the sizes and the setting to change (fsdp under ddp, more GPUs under fsdp).
    """
    plan = plan_training(cfg, parent, gpus)
    state = sum(plan["static"].values())
    if state > capacity:
        fix = ("use dist: fsdp, which shards all of it over the GPUs" if cfg.dist.strategy == "ddp"
               else "use more GPUs or a larger dist.shard_size")
        raise ValueError(f"dist: the training state takes {state / GiB:.1f} GiB per GPU under {cfg.dist.strategy} "
                         f"({plan['parameters'] / 1e9:.2f}B parameters: weights, gradients, AdamW state and the "
                         f"teacher) and the GPU has {capacity / GiB:.1f} GiB; {fix}")


def _stage_plan(cfg: TrainConfig, parent: ModelConfig, stage: StageConfig, gpus: int) -> dict[str, Any]:
    # FSDP's bf16 policy runs the blocks on bfloat16 copies of the weights (train/fsdp.py), so the residual
    # stream is bfloat16; under plain autocast it stays float32, as the weights are
    gathered_bf16 = cfg.bf16 and cfg.dist.strategy == "fsdp" and gpus > 1
    with FakeTensorMode():
        model = HybridLM(parent)  # fake tensors: shapes only, nothing allocated
        kd = kd_chunk_bytes(model, stage.micro_batch * stage.seq_len, cfg.distill.chunk_size)
        if gathered_bf16:
            keep = float32_params(model)
            for p in model.parameters():
                if p not in keep:
                    p.data = p.data.to(torch.bfloat16)
        act = activation_bytes(model, stage.micro_batch, stage.seq_len, None, cfg.checkpoint_every, cfg.bf16)
    tokens = stage.micro_batch * stage.seq_len
    # the teacher's last hidden state has its weights' dtype (or the policy's bfloat16)
    hidden_bytes = 2 if cfg.distill.teacher_dtype == "bfloat16" or gathered_bf16 else 4
    return {
        "micro_batch": stage.micro_batch, "seq_len": stage.seq_len, "activations": act["total"],
        "saved_for_backward": act["saved"], "recompute_peak": act["recompute"],
        "teacher_hidden": tokens * parent.hidden_size * hidden_bytes, "kd_chunk": kd,
        "tflops_per_step": _flops(cfg, parent, stage, gpus) / 1e12,
    }


def _flops(cfg: TrainConfig, parent: ModelConfig, stage: StageConfig, gpus: int) -> float:
    """FLOPs of one optimizer step over all GPUs: the teacher's forward (2N per token), the student's
    forward and backward at the budgets' expected size (6N), recomputed blocks (2N times their share) and
    causal attention (4 B T^2 H hd per layer forward, three times that with backward)."""
    tokens = stage.micro_batch * stage.seq_len * stage.accumulation(gpus)[0] * gpus
    n = parent.num_parameters() - parent.vocab_size * parent.hidden_size  # the embedding lookup is no matmul
    weights = stage.budget_weights or [1.0] * len(cfg.budgets)
    expected = sum(w * b for w, b in zip(weights, cfg.budgets)) / sum(weights)
    share = 0.0 if cfg.checkpoint_every == 0 else 1.0 / cfg.checkpoint_every
    attention = sum(
        2 * stage.seq_len * h * parent.head_dim for h in parent.attention_heads_per_layer()
    ) * tokens  # causal: half of 4 T^2 H hd per sequence
    return 2 * n * tokens + attention + (6 + 2 * share) * expected * n * tokens + 3 * expected * attention


def _advice(cfg: TrainConfig, static: dict[str, int], stages: dict[str, dict], gpus: int) -> str:
    worst = max(stages, key=lambda name: stages[name]["total"])
    activations = stages[worst]["activations"]
    states = sum(static.values())
    shard = min(gpus, cfg.dist.shard_size or gpus)
    if cfg.dist.strategy == "fsdp" and shard < gpus:  # HSDP: sharding wider is the cheapest memory
        return (f"a larger dist.shard_size (null: shard over all {gpus} GPUs); shards of {shard} keep "
                f"{states / GiB:.1f} GiB of training state per GPU")
    if states >= activations:
        if cfg.dist.strategy == "ddp":
            return "dist: fsdp (shards weights, gradients, optimizer state and teacher over the GPUs)"
        return f"more GPUs (the sharded training state alone takes {states / GiB:.1f} GiB at {gpus})"
    if cfg.checkpoint_every != 1:
        return "activation_checkpointing: blocks (recompute every block in backward)"
    row = stages[worst]
    if row["micro_batch"] > 1:
        return f"a smaller micro_batch in stage {worst!r} (more accumulation keeps the global batch)"
    return (f"a shorter seq_len in stage {worst!r}: at micro_batch 1 its activations take "
            f"{activations / GiB:.1f} GiB ({row['saved_for_backward'] / GiB:.1f} GiB of block inputs kept, "
            f"{row['recompute_peak'] / GiB:.1f} GiB while one block is recomputed)")


def format_plan(plan: dict) -> str:
    """The plan as a terminal table (GiB)."""
    hsdp = f" (HSDP: shards of {plan['shard_size']})" if 1 < plan["shard_size"] < plan["gpus"] else ""
    lines = [f"{plan['parameters'] / 1e9:.2f}B parameters, {plan['gpus']} GPU(s), dist {plan['dist']}{hsdp}; per GPU:"]
    for name, value in plan["static"].items():
        lines.append(f"  {name:<22} {value / GiB:10.2f} GiB")
    for name, row in plan["stages"].items():
        lines.append(f"  stage {name} (micro_batch {row['micro_batch']} x {row['seq_len']} tokens):")
        for key in ("activations", "teacher_hidden", "kd_chunk", "total"):
            lines.append(f"    {key:<20} {row[key] / GiB:10.2f} GiB")
        lines.append(f"    {'TFLOPs per step':<20} {row['tflops_per_step']:10.1f}")
    verdict = "" if plan["fits"] is None else (
        f"; fits in {plan['gpu_memory_gib']:g} GiB" if plan["fits"] else
        f"; does NOT fit in {plan['gpu_memory_gib']:g} GiB: try {plan['advice']}"
    )
    lines.append(f"peak {plan['peak'] / GiB:.2f} GiB per GPU{verdict}")
    return "\n".join(lines)
