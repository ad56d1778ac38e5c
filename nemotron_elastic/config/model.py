# SPDX-License-Identifier: Apache-2.0
"""Dataclass configs.

`ModelConfig` describes one native `HybridLM`: a hybrid stack of single-mixer blocks given by `pattern`
(`M` = Mamba2, `*` = attention, `-` = MLP), as in HF NemotronH's `hybrid_override_pattern`. A Llama-family
model is the same stack with pattern `*-*-...` (one attention + one MLP block per decoder layer), RoPE and a
gated SiLU MLP. Qwen2 / Qwen3 / Mistral are Llama-family stacks with attention extras: q/k/v biases without an
o_proj bias (Qwen2), a per-head RMSNorm of q and k (Qwen3), a sliding attention window (Mistral). RoPE is
plain (`rope_theta`) or scaled as transformers does (`rope_parameters`, the dict of HF's config.json).

Per-layer (heterogeneous) widths: `intermediate_size`, `num_attention_heads` and `mamba_num_heads` take either
one int (every layer of that type) or a list with one int per layer *of that type*, in layer order. This is
what a sliced heterogeneous sub-model needs; imported parents are homogeneous.

Configs are read and written with the strict YAML loader in `config/yaml_io.py` (unknown keys and wrong types
are errors naming the dotted key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

BLOCK_TYPES = {"M": "mamba", "*": "attention", "-": "mlp"}
FAMILIES = ("nemotron_h", "llama", "qwen2", "qwen3", "mistral")  # HF model_types, one export format each
# RoPE types the native model runs (transformers' names), with the rope_parameters keys each one needs.
ROPE_TYPES: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor", "original_max_position_embeddings"),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


@dataclass(kw_only=True)
class ModelConfig:
    """Architecture of a native HybridLM (fields mirror HF NemotronHConfig where they overlap)."""

    # --- stack -------------------------------------------------------------------------------------------
    family: Literal["nemotron_h", "llama", "qwen2", "qwen3", "mistral"] = "nemotron_h"  # the HF export format
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
    # Scaled RoPE: HF's `rope_parameters` as config.json has them (rope_type, rope_theta, factor, ...), kept
    # verbatim so that export writes them back unchanged; None: plain RoPE with base rope_theta.
    rope_parameters: dict[str, Any] | None = None
    attention_bias: bool = False  # biases on q, k, v and o_proj
    attention_out_bias: bool | None = None  # o_proj bias; None: as attention_bias (Qwen2: False, q/k/v True)
    attention_qk_norm: bool = False  # RMSNorm over head_dim of every q and k head, before RoPE (Qwen3)
    sliding_window: int | None = None  # a query sees the last `sliding_window` tokens, its own included
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
        if self.rope_parameters is not None:
            self._check_rope_parameters(self.rope_parameters)
        window = self.sliding_window
        if window is not None and (isinstance(window, bool) or window <= 0):
            raise ValueError(f"sliding_window: must be a positive integer or None, got {window!r}")

    def _check_rope_parameters(self, params: dict[str, Any]) -> None:
        """One line naming the key for rope_parameters the native model cannot run as transformers does."""
        if self.rope_theta is None or params.get("rope_theta", self.rope_theta) != self.rope_theta:
            raise ValueError(
                f"rope_parameters.rope_theta: {params.get('rope_theta')!r} differs from rope_theta "
                f"{self.rope_theta!r}"
            )
        rope_type = self.rope_type
        if rope_type not in ROPE_TYPES:
            supported = ", ".join(ROPE_TYPES)
            raise ValueError(
                f"rope_parameters.rope_type: unsupported rope type {rope_type!r} (supported: {supported})"
            )
        for key in ROPE_TYPES[rope_type]:
            if params.get(key) is None:
                raise ValueError(f"rope_parameters.{key}: required for rope type {rope_type!r}")
        if params.get("partial_rotary_factor", 1.0) not in (None, 1, 1.0):
            raise ValueError(
                f"rope_parameters.partial_rotary_factor: only full rotation (1.0) is supported, "
                f"got {params['partial_rotary_factor']!r}"
            )

    # --- derived -----------------------------------------------------------------------------------------
    @property
    def rope_type(self) -> str | None:
        """The RoPE variant ("default", "yarn", ...; also HF's legacy key "type"), or None without RoPE."""
        if self.rope_theta is None:
            return None
        params = self.rope_parameters or {}
        return params.get("rope_type", params.get("type", "default"))

    @property
    def o_proj_bias(self) -> bool:
        """Whether attention's o_proj has a bias: attention_out_bias, or attention_bias when that is None."""
        return self.attention_bias if self.attention_out_bias is None else self.attention_out_bias

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
                total += 2 * d * q + 2 * d * kv + self.attention_bias * (q + 2 * kv) + self.o_proj_bias * d
                total += 2 * self.head_dim * self.attention_qk_norm  # q_norm, k_norm: shared by all heads
            else:
                inner = width * self.mamba_head_dim
                conv_dim = inner + 2 * self.mamba_n_groups * self.ssm_state_size
                proj = inner + conv_dim + width
                total += d * proj + inner * d + self.mamba_proj_bias * (proj + d)
                total += conv_dim * self.conv_kernel + self.use_conv_bias * conv_dim
                total += 3 * width + inner  # dt_bias, A_log, D, gated-norm weight
        return total

