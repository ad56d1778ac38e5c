# SPDX-License-Identifier: Apache-2.0
"""Weight initialisation of a HybridLM (`HybridLM.init_weights`): every tensor, in one place.

A parent built for training from scratch, a random model for benchmarks and tests, and a model built on the
meta device and then materialised (`to_empty`) all take their values here; imported weights replace them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .mamba2 import Mamba2Mixer
from .norm import RMSNorm


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise every tensor of `model`, a HybridLM (the one place weights are initialised), from `generator`.

    | tensor                                  | init                                                 |
    |-----------------------------------------|------------------------------------------------------|
    | embeddings, lm_head, every Linear weight | N(0, initializer_range)                              |
    | residual outputs o_proj, down_proj,      | N(0, initializer_range / sqrt(num_layers)) when      |
    |   out_proj                               |   rescale_prenorm_residual (GPT-2 scheme)            |
    | every bias                               | 0                                                    |
    | conv1d.weight                            | U(-1/sqrt(K), 1/sqrt(K)) (PyTorch's Conv1d default)  |
    | A_log                                    | log(1..H) (S4D-real)                                 |
    | D                                        | 1                                                    |
    | dt_bias                                  | softplus^-1(dt), dt log-uniform in [dt_min, dt_max]  |
    | every norm weight (q_norm, k_norm too)   | 1                                                    |
    """
    cfg = model.config
    model.tie_weights()
    std = cfg.initializer_range
    resid_std = std / math.sqrt(cfg.num_layers) if cfg.rescale_prenorm_residual else std
    model.embeddings.weight.normal_(0.0, std, generator=generator)
    if not cfg.tie_word_embeddings:
        model.lm_head.weight.normal_(0.0, std, generator=generator)
    model.norm_f.weight.fill_(1.0)
    for block in model.layers:
        block.norm.weight.fill_(1.0)
        for name, module in block.mixer.named_modules():
            if isinstance(module, nn.Linear):
                is_resid = name in ("o_proj", "down_proj", "out_proj")
                module.weight.normal_(0.0, resid_std if is_resid else std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):  # attention's q_norm / k_norm
                module.weight.fill_(1.0)
        mixer = block.mixer
        if isinstance(mixer, Mamba2Mixer):
            bound = 1.0 / math.sqrt(mixer.conv_kernel)
            mixer.conv1d.weight.uniform_(-bound, bound, generator=generator)
            if mixer.conv1d.bias is not None:
                mixer.conv1d.bias.zero_()
            heads = mixer.num_heads
            mixer.A_log.copy_(torch.log(torch.arange(1, heads + 1, dtype=torch.float64)))
            mixer.D.fill_(1.0)
            lo, hi = math.log(cfg.time_step_min), math.log(cfg.time_step_max)
            u = torch.rand(heads, generator=generator, dtype=torch.float64, device=mixer.D.device)
            dt = torch.exp(u * (hi - lo) + lo).clamp(min=cfg.time_step_floor)
            mixer.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            mixer.norm.weight.fill_(1.0)
