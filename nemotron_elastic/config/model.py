# SPDX-License-Identifier: Apache-2.0
"""Dataclass configs.

`ModelConfig` describes one native `HybridLM`: a hybrid stack of single-mixer blocks given by `pattern`
(`M` = Mamba2, `*` = attention, `-` = MLP), as in HF NemotronH's `hybrid_override_pattern`. A Llama-family
model is the same stack with pattern `*-*-...` (one attention + one MLP block per decoder layer), RoPE and a
gated SiLU MLP.

Per-layer (heterogeneous) widths: `intermediate_size`, `num_attention_heads` and `mamba_num_heads` take either
one int (every layer of that type) or a list with one int per layer *of that type*, in layer order. This is
what a sliced heterogeneous sub-model needs; imported parents are homogeneous.

Configs are read and written with the strict YAML loader in `config/yaml_io.py` (unknown keys and wrong types
are errors naming the dotted key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BLOCK_TYPES = {"M": "mamba", "*": "attention", "-": "mlp"}


@dataclass(kw_only=True)
class ModelConfig:
    """Architecture of a native HybridLM (fields mirror HF NemotronHConfig where they overlap)."""

    # --- stack -------------------------------------------------------------------------------------------
    family: Literal["nemotron_h", "llama"] = "nemotron_h"  # decides the HF export format
    pattern: str = "M-M*-"  # one char per block: M mamba2, * attention, - mlp
    vocab_size: int = 256
    hidden_size: int = 64
    tie_word_embeddings: bool = False
    norm_eps: float = 1e-5  # every RMSNorm (block pre-norms, final norm, Mamba gated norm)
    # --- attention ('*') ---------------------------------------------------------------------------------
    num_attention_heads: int | list[int] = 4  # query heads (per attention layer if a list)
    num_key_value_heads: int = 2  # KV groups; query heads of a group are contiguous
    head_dim: int = 16
    rope_theta: float | None = None  # None: no positional encoding (NemotronH); else RoPE base (Llama)
    attention_bias: bool = False
    max_position_embeddings: int = 4096
    # --- MLP ('-') ---------------------------------------------------------------------------------------
    intermediate_size: int | list[int] = 128  # per MLP layer if a list
    mlp_activation: Literal["relu2", "silu"] = "relu2"
    mlp_gated: bool = False  # True: down(act(gate(x)) * up(x)) (Llama); False: down(act(up(x))) (NemotronH)
    mlp_bias: bool = False
    # --- Mamba2 ('M') ------------------------------------------------------------------------------------
    mamba_num_heads: int | list[int] = 8  # per Mamba layer if a list; a multiple of mamba_n_groups
    mamba_head_dim: int = 8
    mamba_n_groups: int = 2  # B/C groups; heads map to groups contiguously
    ssm_state_size: int = 16
    conv_kernel: int = 4
    use_conv_bias: bool = True
    mamba_proj_bias: bool = False  # bias of in_proj / out_proj (HF `use_bias`)
    chunk_size: int = 64  # SSD chunk length; does not change the function, only speed (64 is fastest on CPU)
    time_step_min: float = 0.001  # dt_bias init range, and the lower clamp of softplus(dt) (as HF NemotronH)
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    # --- init and tokens ---------------------------------------------------------------------------------
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True  # out_proj init / sqrt(num_layers), as HF NemotronH
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "vocab_size", "hidden_size", "num_key_value_heads", "head_dim", "mamba_head_dim", "mamba_n_groups",
            "ssm_state_size", "conv_kernel", "chunk_size", "max_position_embeddings",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        for name in ("norm_eps", "time_step_min", "time_step_max", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)!r}")
        bad = sorted(set(self.pattern) - set(BLOCK_TYPES))
        if not self.pattern or bad:
            raise ValueError(f"pattern: must be a non-empty string of 'M', '*', '-'; got {self.pattern!r}")
        for name, count in (
            ("num_attention_heads", self.pattern.count("*")),
            ("intermediate_size", self.pattern.count("-")),
            ("mamba_num_heads", self.pattern.count("M")),
        ):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != count:
                raise ValueError(f"{name}: list has {len(value)} entries but the pattern has {count} such layers")
            if any(v <= 0 for v in (value if isinstance(value, list) else [value])):
                raise ValueError(f"{name}: sizes must be positive, got {value}")
        for heads in self.attention_heads_per_layer():
            if heads % self.num_key_value_heads:
                raise ValueError(
                    f"num_attention_heads: {heads} is not a multiple of num_key_value_heads "
                    f"({self.num_key_value_heads})"
                )
        for heads in self.mamba_heads_per_layer():
            if heads % self.mamba_n_groups:
                raise ValueError(
                    f"mamba_num_heads: {heads} is not a multiple of mamba_n_groups ({self.mamba_n_groups})"
                )
        if self.rope_theta is not None and self.head_dim % 2:
            raise ValueError(f"head_dim: RoPE needs an even head_dim, got {self.head_dim}")

    # --- derived -----------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.pattern)

    def _per_layer(self, value: int | list[int], char: str) -> list[int]:
        count = self.pattern.count(char)
        return list(value) if isinstance(value, list) else [value] * count

    def attention_heads_per_layer(self) -> list[int]:
        """Query heads of each attention layer, in layer order."""
        return self._per_layer(self.num_attention_heads, "*")

    def mlp_sizes_per_layer(self) -> list[int]:
        """Intermediate size of each MLP layer, in layer order."""
        return self._per_layer(self.intermediate_size, "-")

    def mamba_heads_per_layer(self) -> list[int]:
        """Mamba heads of each Mamba layer, in layer order."""
        return self._per_layer(self.mamba_num_heads, "M")

    def layer_sizes(self, layer: int) -> int:
        """The elastic width of block `layer`: MLP size, attention query heads or Mamba heads."""
        char = self.pattern[layer]
        rank = self.pattern[:layer].count(char)
        per_type = {
            "-": self.mlp_sizes_per_layer,
            "*": self.attention_heads_per_layer,
            "M": self.mamba_heads_per_layer,
        }
        return per_type[char]()[rank]

    @property
    def is_homogeneous(self) -> bool:
        """True when every layer of a type has the same width (exportable with stock HF classes)."""
        return all(
            len(set(sizes)) <= 1
            for sizes in (
                self.attention_heads_per_layer(),
                self.mlp_sizes_per_layer(),
                self.mamba_heads_per_layer(),
            )
        )

    def num_parameters(self) -> int:
        """Exact parameter count of the model this config builds (tied embeddings counted once)."""
        d = self.hidden_size
        total = self.vocab_size * d * (1 if self.tie_word_embeddings else 2) + d  # embeddings, lm_head, norm_f
        for i, char in enumerate(self.pattern):
            total += d  # block pre-norm
            width = self.layer_sizes(i)
            if char == "-":
                n_in = 2 if self.mlp_gated else 1
                total += (n_in + 1) * d * width + (self.mlp_bias * ((n_in * width) + d))
            elif char == "*":
                q, kv = width * self.head_dim, self.num_key_value_heads * self.head_dim
                total += 2 * d * q + 2 * d * kv + self.attention_bias * (q + 2 * kv + d)
            else:
                inner = width * self.mamba_head_dim
                conv_dim = inner + 2 * self.mamba_n_groups * self.ssm_state_size
                proj = inner + conv_dim + width
                total += d * proj + inner * d + self.mamba_proj_bias * (proj + d)
                total += conv_dim * self.conv_kernel + self.use_conv_bias * conv_dim
                total += 3 * width + inner  # dt_bias, A_log, D, gated-norm weight
        return total

