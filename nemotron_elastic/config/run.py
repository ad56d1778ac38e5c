# SPDX-License-Identifier: Apache-2.0
"""Run configs for elastic training (`nemotron-elastic train`) and pretraining (`pretrain`).

Loaded with the strict YAML loader (`config.yaml_io.load_yaml(TrainConfig, path, overrides)`): unknown keys
and wrong types are errors naming the dotted key, and so is every number outside its range (`check_ranges`).
Defaults follow the paper (docs/METHOD.md 8.2) where it speaks:
budgets 1.0 / 0.75 / 0.5, model LR 9e-5 and router LR 1e-2 with 60 warmup steps, tau 1.0 -> 0.05, logit
scale 1 -> 10, lambda 1, d_router 256, forward KL at T = 1 and no CE; stage 1 uniform budgets, stage 2
0.5 / 0.3 / 0.2 at a longer context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .data import DataConfig, blend_of
from .schedule import DistConfig, StageConfig, dist_config
from .types import check_ranges


@dataclass(kw_only=True)
class MenuConfig:
    """Choice menus per axis: fractions of the parent (floats) or sizes (ints); null = axis not elastic."""

    hidden: list[int | float] | None = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.625, 0.5])
    mlp: list[int | float] | None = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.625, 0.5])
    attention_heads: list[int | float] | None = None  # the paper's 12B family keeps attention heads
    mamba_heads: list[int | float] | None = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.625, 0.5])
    mamba_head_dim: list[int | float] | None = None
    depth: list[int] | None = None  # numbers of layers dropped from the depth ranking, e.g. [0, 2, 4]
    per_layer: list[Literal["mlp", "attention_heads", "mamba_heads"]] = field(default_factory=list)


@dataclass(kw_only=True)
class RouterConfig:
    hidden_dim: int = 256
    init_std: float = 0.1
    lr: float = 1e-2
    tau_start: float = 1.0
    tau_end: float = 0.05
    scale_start: float = 1.0
    scale_end: float = 10.0
    mask: Literal["hard", "soft"] = "hard"
    straight_through: bool = False  # hard masks: value 1 with the probability's gradient instead of x p
    budget_kind: Literal["params", "memory"] = "params"
    memory_context: int = 8192  # memory budgets: context length, batch and bytes per element
    memory_batch: int = 1
    memory_weight_bytes: float = 2.0
    memory_kv_bytes: float = 2.0
    memory_ssm_bytes: float = 4.0
    dead_zone: float = 0.05
    full_pull: float = 10.0
    loss_weight: float = 1.0  # lambda
    # The probabilities the budget loss reads: "sampled" = the step's sharpened Gumbel probabilities (the
    # paper and NVIDIA's code); "unsharpened" = softmax(logits) without noise, temperature or scale, whose
    # gradient never vanishes. The decision study tied them (docs/METHOD.md 7.3, 11), so the paper's form.
    budget_probs: Literal["unsharpened", "sampled"] = "sampled"
    # The sub-model a budget gets: "within_budget" = the one the router scores highest among those whose
    # cost is within dead_zone of the budget (router/decision.py); "argmax" = the paper's row-wise
    # argmax, whose cost can land outside the dead zone.
    decision: Literal["within_budget", "argmax"] = "within_budget"
    # Which export formats every budget's sub-model must fit (docs/SERVING.md, "Engines"): "stock" = one width
    # per axis (no per-layer menus), loadable by every engine; "puzzle" = NVIDIA's per-layer format of the
    # parent's family, which vLLM loads (NemotronH: Puzzle; Llama: DeciLM, MLP widths multiples of 256; none
    # for Qwen2 / Qwen3 / Mistral): per-layer MLP widths only; "any" = every menu, per-layer heads with own code.
    exportable: Literal["stock", "puzzle", "any"] = "any"

    def __post_init__(self) -> None:
        check_ranges(
            self, hidden_dim="[1, inf)", init_std="(0, inf)", lr="[0, inf)", tau_start="(0, inf)",
            tau_end="(0, inf)", scale_start="(0, inf)", scale_end="(0, inf)", memory_context="[1, inf)",
            memory_batch="[1, inf)", memory_weight_bytes="(0, inf)", memory_kv_bytes="(0, inf)",
            memory_ssm_bytes="(0, inf)", dead_zone="[0, 1)", full_pull="[0, inf)", loss_weight="[0, inf)",
        )


@dataclass(kw_only=True)
class DistillConfig:
    temperature: float = 1.0
    kd_weight: float = 1.0
    ce_weight: float = 0.0  # the paper trains with KD only
    chunk_size: int = 1024  # tokens per chunk of the chunked KL / CE
    # The frozen teacher's weights (it only runs forward): bfloat16 halves its memory; the student keeps
    # float32 master weights either way.
    teacher_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        check_ranges(self, temperature="(0, inf)", kd_weight="[0, inf)", ce_weight="[0, inf)", chunk_size="[1, inf)")


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 9e-5
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 60
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        check_ranges(
            self, lr="(0, inf)", min_lr_ratio="[0, 1]", warmup_steps="[0, inf)", weight_decay="[0, inf)",
            beta1="[0, 1)", beta2="[0, 1)", grad_clip="(0, inf]",
        )


def _check_run(cfg: Any) -> None:
    """What train and pretrain configs share: logging intervals and at least one stage."""
    check_ranges(cfg, log_every="[1, inf)", eval_every="[1, inf)", save_every="[1, inf)",
                 activation_checkpointing_k="[1, inf)", peak_tflops="(0, inf)")
    cfg.dist = dist_config(cfg.dist)
    if not cfg.stages:
        raise ValueError("stages: at least one stage")
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):  # the data position is saved per stage name
        raise ValueError(f"stages: duplicate names in {names}")
    for i, stage in enumerate(cfg.stages):
        if stage.data is not None:
            blend_of(stage.data, f"stages[{i}].data")


class _Checkpointing:
    """`activation_checkpointing` of a run config as the model's `checkpoint_every` (0: off)."""

    activation_checkpointing: str
    activation_checkpointing_k: int

    @property
    def checkpoint_every(self) -> int:
        return {"none": 0, "blocks": 1}.get(self.activation_checkpointing, self.activation_checkpointing_k)


@dataclass(kw_only=True)
class TrainConfig(_Checkpointing):
    """`nemotron-elastic train --config FILE [key.sub=value ...]`."""

    SHORTHANDS: ClassVar[dict[str, str]] = {"dist": "strategy"}  # `dist: fsdp` = `dist: {strategy: fsdp}`

    parent: str = "runs/parent-scored"  # a scored parent (native checkpoint + ranking.json)
    out: str = "runs/elastic"
    budgets: list[float] = field(default_factory=lambda: [1.0, 0.75, 0.5])
    # Fixed sub-models instead of the router's choice: one SubnetSpec JSON file per budget (same order). Each
    # budget then trains its given spec by KD and the router is left untouched: the Minitron route (one
    # budget: prune with the rankings, then distil) or hand-picked architectures (docs/METHOD.md 10: the
    # ablations).
    specs: list[str] | None = None
    menus: MenuConfig = field(default_factory=MenuConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stages: list[StageConfig] = field(
        default_factory=lambda: [
            StageConfig(name="stage1", steps=100, seq_len=256, grad_accum=3, budget_weights=None),
            StageConfig(name="stage2", steps=50, seq_len=512, micro_batch=2, grad_accum=3,
                        budget_weights=[0.5, 0.3, 0.2]),
        ]
    )
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    bf16: bool = True  # bf16 autocast (CPU and GPU); weights stay fp32
    log_every: int = 10
    eval_every: int = 50
    save_every: int = 50
    save_async: bool = True  # checkpoint files written by a thread while the next step trains
    deterministic: bool = False  # torch.use_deterministic_algorithms for exact resume checks
    # data parallelism under torchrun (WORLD_SIZE > 1): `ddp`, `fsdp` or {strategy, shard_size, timeout_minutes}
    dist: DistConfig | Literal["ddp", "fsdp"] = field(default_factory=DistConfig)
    # Recompute blocks in backward instead of keeping their activations (docs/DESIGN.md 3.8): "blocks" every
    # block, "every_k" blocks 0, k, 2k, ... (k = activation_checkpointing_k). Same losses and gradients.
    activation_checkpointing: Literal["none", "blocks", "every_k"] = "none"
    activation_checkpointing_k: int = 2
    # Fused Mamba kernels on CUDA (model/kernels.py): auto = when they load and match the reference (else one
    # loud warning), required = refuse to start without them, torch = the pure-PyTorch path
    kernels: Literal["auto", "required", "torch"] = "auto"
    # torch.compile every block's mixer, one compile per size it sees (each budget is its own size; past torch's
    # recompile limit a mixer runs eager); measured, not assumed: benchmarks/gpu_check.py
    compile: bool = False
    # The device's peak FLOP/s in TFLOP/s (bf16, dense) for the MFU metric; None: the datasheet value of a
    # known GPU (train/runtime.py), else MFU is not logged
    peak_tflops: float | None = None
    # Debug: at every micro-step the ranks compare a hash of the sub-model each runs (two small collectives)
    # and fail at once if they differ, instead of hanging in a collective.
    check_decisions: bool = False

    def __post_init__(self) -> None:
        if not self.budgets or any(not 0.0 < b <= 1.0 for b in self.budgets):
            raise ValueError(f"budgets: every budget must be in (0, 1], got {self.budgets}")
        if len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"budgets: duplicates in {self.budgets}")
        if self.specs is not None and len(self.specs) != len(self.budgets):
            raise ValueError(f"specs: need one spec file per budget ({len(self.budgets)}), got {len(self.specs)}")
        r = self.router
        if not 0.0 <= r.dead_zone < 1.0:
            raise ValueError(f"router.dead_zone: must be in [0, 1), got {r.dead_zone}")
        if r.decision == "within_budget" and r.dead_zone == 0.0:
            raise ValueError("router.dead_zone: 0 leaves no sub-model to choose within the budget; "
                             "give a tolerance (e.g. 0.05) or set router.decision: argmax")
        _check_run(self)
        for i, stage in enumerate(self.stages):
            w = stage.budget_weights
            if w is not None and (len(w) != len(self.budgets) or sum(w) <= 0):
                raise ValueError(
                    f"stages[{i}].budget_weights: need {len(self.budgets)} non-negative weights (one per budget), got {w}"
                )

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


@dataclass(kw_only=True)
class PretrainConfig(_Checkpointing):
    """`nemotron-elastic pretrain --config FILE`: a small parent from scratch (plain next-token loss)."""

    SHORTHANDS: ClassVar[dict[str, str]] = {"dist": "strategy"}

    preset: str | None = "tiny-hybrid"  # a named ModelConfig; `model` (if given) replaces it
    model: dict | None = None  # ModelConfig fields overriding the preset, e.g. {pattern: "M-*-"}
    tokenizer: str | None = None  # a tokenizer folder; None: train a byte-level BPE of the model's vocab size
    out: str = "runs/parent"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-3, warmup_steps=50, weight_decay=0.1))
    stages: list[StageConfig] = field(
        default_factory=lambda: [StageConfig(name="pretrain", steps=600, seq_len=256, micro_batch=8, grad_accum=1)]
    )
    seed: int = 0
    bf16: bool = True
    log_every: int = 20
    eval_every: int = 200
    save_every: int = 200
    save_async: bool = True  # checkpoint files written by a thread while the next step trains
    deterministic: bool = False
    # data parallelism under torchrun (WORLD_SIZE > 1): `ddp`, `fsdp` or {strategy, shard_size, timeout_minutes}
    dist: DistConfig | Literal["ddp", "fsdp"] = field(default_factory=DistConfig)
    # Recompute blocks in backward instead of keeping their activations (docs/DESIGN.md 3.8): "blocks" every
    # block, "every_k" blocks 0, k, 2k, ... (k = activation_checkpointing_k). Same losses and gradients.
    activation_checkpointing: Literal["none", "blocks", "every_k"] = "none"
    activation_checkpointing_k: int = 2
    # Fused Mamba kernels on CUDA (model/kernels.py): auto = when they load and match the reference (else one
    # loud warning), required = refuse to start without them, torch = the pure-PyTorch path
    kernels: Literal["auto", "required", "torch"] = "auto"
    # torch.compile every block's mixer, one compile per size it sees (each budget is its own size; past torch's
    # recompile limit a mixer runs eager); measured, not assumed: benchmarks/gpu_check.py
    compile: bool = False
    # The device's peak FLOP/s in TFLOP/s (bf16, dense) for the MFU metric; None: the datasheet value of a
    # known GPU (train/runtime.py), else MFU is not logged
    peak_tflops: float | None = None

    def __post_init__(self) -> None:
        _check_run(self)
