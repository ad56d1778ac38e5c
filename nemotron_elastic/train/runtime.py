# SPDX-License-Identifier: Apache-2.0
"""The device side of a training run: which kernels the models run and whether their mixers are compiled,
and what GPU users read in the log (tokens/s, model TFLOP/s, MFU, peak memory).

Model FLOPs (the convention of MFU: the work the model needs, not what the hardware ran), per micro-batch
of `tokens` tokens at context T:

    forward(model) = 2 x matmul parameters x tokens + causal attention 2 T H hd x tokens per attention layer
    elastic step   = forward(teacher) + (3 + r) x forward(the sub-model the step trains)

"matmul parameters" are all but the embedding table (its lookup is no matmul; a tied table still counts once,
as the LM head); 3 = forward + backward (twice the forward); r = the share of blocks recomputed under
activation checkpointing (counted, as `plan` does: hardware FLOPs rather than PaLM's model FLOPs).

MFU = model FLOPs / (seconds x peak FLOP/s of the device). The peak is the config's
`peak_tflops`, or the datasheet's dense bf16 value of a known GPU (`PEAK_TFLOPS`), else unknown (no MFU is
logged). Seconds are training time only: evaluations and checkpoints between two log lines are left out.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from ..config.model import ModelConfig
from ..config.spec import SubnetSpec
from ..model.hybrid import HybridLM
from ..model.kernels import fallback_bytes, select_kernels
from ..model.masks import ElasticMasks

# Dense bf16 TFLOP/s from NVIDIA's datasheets (SXM parts), matched against torch.cuda.get_device_name().
PEAK_TFLOPS = {"B200": 2250.0, "H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0,
               "L4": 121.0, "A10": 125.0}




def forward_flops(config: ModelConfig, tokens: int, seq_len: int) -> float:
    """FLOPs of one forward of `config` over `tokens` tokens at context `seq_len` (module docstring)."""
    matmul = config.num_parameters() - (0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size)
    attention = sum(2 * seq_len * h * config.head_dim for h in config.attention_heads_per_layer())
    return float(2 * matmul * tokens + attention * tokens)


def spec_of(parent: ModelConfig, masks: ElasticMasks) -> SubnetSpec:
    """The sub-model that hard (sliced) masks run, as a SubnetSpec; for soft masks, the widths they compute."""
    widths: dict[str, list[int]] = {"-": [], "*": [], "M": []}
    groups = {"-": 1, "*": parent.num_key_value_heads, "M": parent.mamba_n_groups}
    for i, char in enumerate(parent.pattern):
        layer = masks.layers[i]
        widths[char].append(parent.layer_sizes(i) if layer is None else layer.width.size * groups[char])
    kept = tuple(i for i, layer in enumerate(masks.layers) if layer is not None)
    return SubnetSpec(parent, masks.hidden.size, tuple(widths["-"]), tuple(widths["*"]), tuple(widths["M"]),
                      masks.mamba_head_dim.size, kept)


def elastic_step_flops(teacher: ModelConfig, masks: ElasticMasks | None, tokens: int, seq_len: int,
                       recompute_share: float) -> float:
    """Model FLOPs of one elastic micro-step: the teacher's forward and the trained sub-model's forward,
    backward and recomputation. masks None: the whole model is trained (pretraining, no teacher)."""
    student = teacher if masks is None else spec_of(teacher, masks).config()
    return forward_flops(teacher, tokens, seq_len) * (masks is not None) + (3 + recompute_share) * forward_flops(
        student, tokens, seq_len)


def prepare_models(cfg: Any, device: torch.device, *models: HybridLM) -> str:
    """Choose the kernels once (`cfg.kernels`, model/kernels.py) and give them to every model (the teacher
    and the student run the same ones); with `cfg.compile`, compile every block's mixer. Returns the
    kernels' name. The warning of a fallback names its memory at the run's longest stage."""
    parent = models[0].config
    stage = max(cfg.stages, key=lambda s: s.micro_batch * s.seq_len)
    mamba_layers = parent.pattern.count("M")

    def fallback() -> str:
        if not mamba_layers:
            return ""
        per_layer = fallback_bytes(stage.micro_batch, stage.seq_len, max(parent.mamba_heads_per_layer()),
                                   parent.mamba_head_dim, parent.ssm_state_size, parent.chunk_size)
        return (f"; at micro_batch {stage.micro_batch} x context {stage.seq_len} it keeps about "
                f"{per_layer / 2**30:.1f} GiB per Mamba layer for backward ({mamba_layers} layers)")

    kernels = select_kernels(cfg.kernels, device, fallback)
    for model in models:
        model.set_kernels(kernels)
        if cfg.compile:  # the mixers, not the blocks: FSDP's hooks sit on the blocks and stay outside
            for block in model.layers:
                # static shapes, one compile per size: with dynamic shapes inductor (torch 2.13) fails to bound
                # the SSD's chunk count symbolically
                block.mixer.compile(dynamic=False)
    return kernels.name


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    """The device's peak TFLOP/s for MFU: `configured`, else a known GPU's datasheet value, else None."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def peak_memory_gib(device: torch.device, reset: bool = True) -> float:
    """This process' peak memory since the last reset, in GiB: the CUDA allocator's peak on a GPU (reset each
    call), the peak resident set size of the process on the CPU (not resettable)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class Throughput:
    """Tokens/s, model TFLOP/s per device, MFU and peak memory over the training time between two log lines
    (evaluations and checkpoints are not counted: `pause` before them, `resume` after)."""

    def __init__(self, device: torch.device, peak: float | None):
        self.device, self.peak = device, peak
        self.seconds = self.tokens = self.flops = 0.0
        self._since: float | None = None

    def resume(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def add(self, tokens: int, flops: float) -> None:
        """tokens: over all ranks; flops: this rank's model FLOPs."""
        self.tokens += tokens
        self.flops += flops

    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def row(self) -> dict[str, float]:
        """The metrics of the window so far, and a new window."""
        tflops = self.flops / max(self.seconds, 1e-9) / 1e12
        out = {"tokens_per_s": self.tokens_per_s(), "model_tflops_per_s": tflops,
               "peak_memory_gib": peak_memory_gib(self.device)}
        if self.peak is not None:
            out["mfu"] = tflops / self.peak
        self.seconds = self.tokens = self.flops = 0.0
        return out
