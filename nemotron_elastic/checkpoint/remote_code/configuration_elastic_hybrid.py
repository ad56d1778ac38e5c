# SPDX-License-Identifier: Apache-2.0
"""Configuration of the exported elastic hybrid model (Mamba2 / attention / MLP blocks with per-layer widths).

Copied into heterogeneous Hugging Face exports written by nemotron-elastic; loaded through `auto_map` with
`AutoConfig.from_pretrained(folder, trust_remote_code=True)`. Needs only transformers.

Why a model type of its own: stock `NemotronHConfig` / `LlamaConfig` (transformers 5.24) accept
`per_layer_config`, but their modeling code reads the global `intermediate_size` / `num_attention_heads` /
`mamba_num_heads` and fails on a model whose layers differ. Here every width is a list with one entry per
layer of that type, in layer order, so nothing global is ambiguous.

The field names are those of nemotron-elastic's `ModelConfig`; `pattern` has one char per block:
'M' Mamba2, '*' attention, '-' MLP (as NemotronH's `hybrid_override_pattern`).
"""

from __future__ import annotations

from transformers import PretrainedConfig

_BLOCKS = {"M": "mamba", "*": "attention", "-": "mlp"}
_CHARS = {"attention_heads_per_layer": "*", "mlp_sizes_per_layer": "-", "mamba_heads_per_layer": "M"}


class ElasticHybridConfig(PretrainedConfig):
    """A hybrid stack with per-layer widths.

    Args:
        pattern: one char per block ('M', '*', '-'); the number of blocks is `num_hidden_layers`.
        attention_heads_per_layer: query heads of each '*' block (a multiple of `num_key_value_heads`).
        mlp_sizes_per_layer: intermediate size of each '-' block.
        mamba_heads_per_layer: heads of each 'M' block (a multiple of `mamba_n_groups`).
        rope_theta: RoPE base for attention, or None for no positional encoding (NemotronH).
        mlp_activation: "relu2" (NemotronH) or "silu"; mlp_gated: down(act(gate(x)) * up(x)) (Llama).
        family: the family of the model this one was cut from ("nemotron_h" or "llama"); informational.
        Other fields as in NemotronH / Llama configs.
    """

    model_type = "nemotron_elastic_hybrid"

    def __init__(
        self,
        pattern: str = "M-*-",
        vocab_size: int = 256,
        hidden_size: int = 64,
        tie_word_embeddings: bool = False,
        norm_eps: float = 1e-5,
        attention_heads_per_layer: list[int] | None = None,
        num_key_value_heads: int = 2,
        head_dim: int = 16,
        rope_theta: float | None = None,
        attention_bias: bool = False,
        max_position_embeddings: int = 4096,
        mlp_sizes_per_layer: list[int] | None = None,
        mlp_activation: str = "relu2",
        mlp_gated: bool = False,
        mlp_bias: bool = False,
        mamba_heads_per_layer: list[int] | None = None,
        mamba_head_dim: int = 8,
        mamba_n_groups: int = 2,
        ssm_state_size: int = 16,
        conv_kernel: int = 4,
        use_conv_bias: bool = True,
        mamba_proj_bias: bool = False,
        chunk_size: int = 64,
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        initializer_range: float = 0.02,
        rescale_prenorm_residual: bool = True,
        family: str = "nemotron_h",
        use_cache: bool = True,
        **kwargs,
    ) -> None:
        self.pattern = pattern
        self.num_hidden_layers = len(pattern)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.tie_word_embeddings = tie_word_embeddings
        self.norm_eps = norm_eps
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rope_theta = rope_theta
        self.attention_bias = attention_bias
        self.max_position_embeddings = max_position_embeddings
        self.mlp_activation = mlp_activation
        self.mlp_gated = mlp_gated
        self.mlp_bias = mlp_bias
        self.mamba_head_dim = mamba_head_dim
        self.mamba_n_groups = mamba_n_groups
        self.ssm_state_size = ssm_state_size
        self.conv_kernel = conv_kernel
        self.use_conv_bias = use_conv_bias
        self.mamba_proj_bias = mamba_proj_bias
        self.chunk_size = chunk_size
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        self.time_step_floor = time_step_floor
        self.initializer_range = initializer_range
        self.rescale_prenorm_residual = rescale_prenorm_residual
        self.family = family
        self.use_cache = use_cache
        # Missing lists default to one uniform width per layer of the type (a default-constructed config).
        self.attention_heads_per_layer = _widths(
            "attention_heads_per_layer", attention_heads_per_layer, pattern, 2 * num_key_value_heads
        )
        self.mlp_sizes_per_layer = _widths(
            "mlp_sizes_per_layer", mlp_sizes_per_layer, pattern, 4 * hidden_size
        )
        self.mamba_heads_per_layer = _widths(
            "mamba_heads_per_layer", mamba_heads_per_layer, pattern, 4 * mamba_n_groups
        )
        self._check()
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def _check(self) -> None:
        """One-line errors for a config the model cannot be built from (a hand-edited config.json)."""
        bad = sorted(set(self.pattern) - set(_BLOCKS))
        if not self.pattern or bad:
            raise ValueError(f"pattern: must be a non-empty string of 'M', '*', '-'; got {self.pattern!r}")
        for name, multiple in (
            ("attention_heads_per_layer", self.num_key_value_heads),
            ("mlp_sizes_per_layer", 1),
            ("mamba_heads_per_layer", self.mamba_n_groups),
        ):
            for value in getattr(self, name):
                if not isinstance(value, int) or value <= 0 or value % multiple:
                    raise ValueError(f"{name}: {value!r} must be a positive multiple of {multiple}")
        if self.mlp_activation not in ("relu2", "silu"):
            raise ValueError(f"mlp_activation: must be 'relu2' or 'silu', got {self.mlp_activation!r}")

    def layer_width(self, layer: int) -> int:
        """The width of block `layer`: query heads ('*'), intermediate size ('-') or Mamba heads ('M')."""
        char = self.pattern[layer]
        rank = self.pattern[:layer].count(char)
        lists = {
            "*": self.attention_heads_per_layer,
            "-": self.mlp_sizes_per_layer,
            "M": self.mamba_heads_per_layer,
        }
        return lists[char][rank]


def _widths(name: str, values: list[int] | None, pattern: str, default: int) -> list[int]:
    """The per-layer widths `name` for `pattern`, checked to have one entry per block of that type."""
    char = _CHARS[name]
    count = pattern.count(char)
    if values is None:
        return [default] * count
    values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    if len(values) != count:
        raise ValueError(f"{name}: {len(values)} entries but the pattern has {count} {_BLOCKS[char]} blocks")
    return list(values)
