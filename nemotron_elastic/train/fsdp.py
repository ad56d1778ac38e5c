# SPDX-License-Identifier: Apache-2.0
"""FSDP2 for the hybrid models (docs/DESIGN.md 3.8): the device mesh, sharding with the mixed-precision
policy, and the parameters that stay whole in float32.

    mesh     1-D ("shard",) over every rank, or 2-D ("replicate", "shard") for HSDP with `dist.shard_size`:
             shards within groups of shard_size ranks (a node), replicas across the groups
    sharding fully_shard(block) for every block, then fully_shard(root) with reshard_after_forward=False
             (the loss reads the LM head after the forward); under bf16 the policy all-gathers parameters
             in bfloat16 and reduces gradients in float32 (master weights and AdamW state stay float32)
    float32  Mamba's A_log, D, dt_bias and every norm weight are left out of sharding (`ignored_params`):
             FSDP2 has no per-parameter policy, and these need float32 (exp(A_log) sets the decay, and bf16
             keeps 8 bits of mantissa). They are tiny (heads or channels per layer), kept whole on every
             rank, and their gradients are averaged over ranks with the other replicated parameters
             (`Distributed.sync_grads`).

References: PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`, `MixedPrecisionPolicy`), torchtitan's
`parallelize` (read, not copied).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from ..model.norm import GatedGroupRMSNorm, RMSNorm

FLOAT32_NAMES = ("A_log", "D", "dt_bias")  # Mamba2 parameters that set the decay and the skip


def build_mesh(device_type: str, world_size: int, shard_size: int | None) -> DeviceMesh:
    """The data-parallel mesh: 1-D over every rank, or (world_size / shard_size, shard_size) for HSDP.

    Raises:
        ValueError: shard_size does not divide the world size.
    """
    if shard_size is None or shard_size == world_size:
        return init_device_mesh(device_type, (world_size,), mesh_dim_names=("shard",))
    if world_size % shard_size:
        raise ValueError(f"dist.shard_size: {shard_size} does not divide the world size {world_size}")
    return init_device_mesh(device_type, (world_size // shard_size, shard_size),
                            mesh_dim_names=("replicate", "shard"))


def float32_params(model: nn.Module) -> set[nn.Parameter]:
    """The parameters kept whole and in their own dtype: Mamba A_log / D / dt_bias and norm weights."""
    keep = {p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] in FLOAT32_NAMES}
    for module in model.modules():
        if isinstance(module, (RMSNorm, GatedGroupRMSNorm)):
            keep.add(module.weight)
    return keep


def shard_model(model: nn.Module, mesh: DeviceMesh, bf16: bool) -> None:
    """FSDP2-shard a HybridLM in place: every block, then the root; see the module docstring.

    cast_forward_inputs is off: the sub-model's masks reach the blocks as inputs, and soft masks must keep
    their float32 weights (the activations are bfloat16 anyway, as the parameters are).
    """
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                  reduce_dtype=torch.float32, cast_forward_inputs=False)
    ignored = float32_params(model)
    for block in model.layers:  # one all-gather per block, freed again after the block's forward
        fully_shard(block, mesh=mesh, mp_policy=policy, ignored_params=ignored)
    fully_shard(model, mesh=mesh, mp_policy=policy, ignored_params=ignored, reshard_after_forward=False)


def clip_mixed_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm of FSDP parameters (DTensors) and replicated ones (plain tensors, e.g.
    the router and the float32 parameters) to `max_norm`; returns the norm before clipping.

    `clip_grad_norm_` cannot stack the two kinds: each kind's norm is taken apart (the DTensor one over all
    shards) and both are scaled by the same factor.
    """
    grads = [p.grad for p in params if p.grad is not None]
    squares = 0.0
    sharded = [g for g in grads if isinstance(g, DTensor)]
    for group in (sharded, [g for g in grads if not isinstance(g, DTensor)]):
        if group:
            norm = torch.nn.utils.get_total_norm(group)
            squares += float(norm.full_tensor() if isinstance(norm, DTensor) else norm) ** 2
    total = squares**0.5
    coef = max_norm / (total + 1e-6)  # the same epsilon as clip_grad_norm_
    if coef < 1.0:
        with torch.no_grad():
            for g in grads:
                g.mul_(coef)
    return total
