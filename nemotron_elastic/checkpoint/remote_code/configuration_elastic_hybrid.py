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

`NemotronHPuzzleConfig` (model_type "nemotron_h_puzzle") is the same model described in NVIDIA's heterogeneous
NemotronH ("Puzzle") format: NemotronH's keys plus one `block_configs` entry per layer (see the section below).
"""

from __future__ import annotations

import copy

from transformers import PretrainedConfig

_BLOCKS = {"M": "mamba", "*": "attention", "-": "mlp"}
# RoPE types the modeling code runs (transformers' names; the scaled ones come from its ROPE_INIT_FUNCTIONS).
ROPE_TYPES = ("default", "linear", "llama3", "yarn", "dynamic", "longrope")
_CHARS = {"attention_heads_per_layer": "*", "mlp_sizes_per_layer": "-", "mamba_heads_per_layer": "M"}


class ElasticHybridConfig(PretrainedConfig):
    """A hybrid stack with per-layer widths.

    Args:
        pattern: one char per block ('M', '*', '-'); the number of blocks is `num_hidden_layers`.
        attention_heads_per_layer: query heads of each '*' block (a multiple of `num_key_value_heads`).
        mlp_sizes_per_layer: intermediate size of each '-' block.
        mamba_heads_per_layer: heads of each 'M' block (a multiple of `mamba_n_groups`).
        rope_theta: RoPE base for attention, or None for no positional encoding (NemotronH).
        rope_parameters: scaled RoPE as transformers 5 writes it (rope_type default / linear / llama3 / yarn /
            dynamic / longrope, rope_theta, factor, ...), or None for plain RoPE with base rope_theta. Kept
            verbatim (not standardised by transformers), so that a read-back config is the written one.
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
        rope_parameters: dict | None = None,
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
        self._check_rope(rope_parameters)
        self._check()
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        # Set after PretrainedConfig.__init__ on purpose: an attribute present there is "standardised" in place
        # (keys added), and the modeling code and the reader want exactly what nemotron-elastic wrote.
        self.rope_parameters = copy.deepcopy(rope_parameters)

    def _check_rope(self, params: dict | None) -> None:
        """One line naming the key for RoPE parameters the modeling code cannot run."""
        if params is None:
            return
        if self.rope_theta is None:
            raise ValueError("rope_parameters: set without rope_theta (a model without RoPE)")
        if not isinstance(params, dict):  # a hand-edited config.json
            raise TypeError(f"rope_parameters: expected a dict, got {params!r}")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_parameters.rope_type: unsupported {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")
        if params.get("rope_theta", self.rope_theta) != self.rope_theta:
            raise ValueError(f"rope_parameters.rope_theta: {params['rope_theta']!r} differs from rope_theta "
                             f"{self.rope_theta!r}")  # fmt: skip

    @property
    def num_attention_heads(self) -> int:
        """The widest attention layer's query heads. Not used by the model (attention_heads_per_layer is); read
        by transformers' generic code, e.g. its longrope check on save, which evaluates hidden_size //
        num_attention_heads even when head_dim is set."""
        return max(self.attention_heads_per_layer, default=self.num_key_value_heads)

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


# --- NVIDIA's heterogeneous NemotronH ("Puzzle") format ------------------------------------------------------
# Puzzle exports (model_type "nemotron_h_puzzle") carry NemotronH's config.json keys (hidden_size, mamba_num_heads,
# n_groups, layer_norm_epsilon, ...) plus one `block_configs` entry per layer:
#     {"block_type": "mamba"} | {"block_type": "attention"} | {"block_type": "mlp", "intermediate_size": F}
# Only the MLP width varies per layer; Mamba and attention blocks take the global widths. Serving engines build
# their NemotronH model from this object: vLLM reads `hybrid_override_pattern`, the global NemotronH fields and
# `get_nemotron_h_config_for_layer(i)` for each MLP / attention block (docs/SERVING.md, "Engines").

_PUZZLE_CHAR = {"mamba": "M", "attention": "*", "mlp": "-"}


class NemotronHPuzzleConfig(ElasticHybridConfig):
    """NemotronH fields + `block_configs` (one dict per layer; MLP blocks carry their `intermediate_size`).

    A subclass of ElasticHybridConfig only so that the elastic hybrid modeling classes accept it; its state is
    the NemotronH fields below, and the elastic names are read-only views of them.
    """

    model_type = "nemotron_h_puzzle"
    num_attention_heads = 4  # a plain field here (NemotronH's global heads, set in __init__), not the derived view

    def __init__(
        self,
        block_configs: list[dict] | None = None,
        vocab_size: int = 256,
        hidden_size: int = 64,
        tie_word_embeddings: bool = False,
        layer_norm_epsilon: float = 1e-5,
        num_attention_heads: int = 4,
        num_key_value_heads: int = 2,
        head_dim: int = 16,
        max_position_embeddings: int = 4096,
        intermediate_size: int = 128,
        mlp_hidden_act: str = "relu2",
        mlp_bias: bool = False,
        mamba_num_heads: int = 8,
        mamba_head_dim: int = 8,
        n_groups: int = 2,
        ssm_state_size: int = 16,
        conv_kernel: int = 4,
        use_conv_bias: bool = True,
        use_bias: bool = False,
        chunk_size: int = 64,
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        initializer_range: float = 0.02,
        rescale_prenorm_residual: bool = True,
        use_cache: bool = True,
        **kwargs,
    ) -> None:
        if block_configs is None:  # a default-constructed config: one block of each type
            block_configs = [{"block_type": "mamba"}, {"block_type": "mlp", "intermediate_size": intermediate_size},
                             {"block_type": "attention"}]  # fmt: skip
        self.block_configs = [dict(block) for block in block_configs]
        for i, block in enumerate(self.block_configs):
            kind = block.get("block_type")
            if kind not in _PUZZLE_CHAR:
                raise ValueError(f"block_configs.{i}.block_type: {kind!r} is not one of mamba, attention, mlp")
            if kind == "mlp" and not (isinstance(block.get("intermediate_size"), int) and block["intermediate_size"] > 0):
                raise ValueError(f"block_configs.{i}.intermediate_size: must be a positive integer")
        # Derived from block_configs whatever config.json says, so the two can never disagree.
        kwargs.pop("hybrid_override_pattern", None)
        kwargs.pop("layers_block_type", None)
        kwargs.pop("num_hidden_layers", None)
        self.hybrid_override_pattern = "".join(_PUZZLE_CHAR[b["block_type"]] for b in self.block_configs)
        self.layers_block_type = [b["block_type"] for b in self.block_configs]
        self.num_hidden_layers = len(self.block_configs)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.num_attention_heads, self.num_key_value_heads = num_attention_heads, num_key_value_heads
        self.head_dim, self.max_position_embeddings = head_dim, max_position_embeddings
        self.intermediate_size, self.mlp_hidden_act, self.mlp_bias = intermediate_size, mlp_hidden_act, mlp_bias
        self.mamba_num_heads, self.mamba_head_dim, self.n_groups = mamba_num_heads, mamba_head_dim, n_groups
        self.ssm_state_size, self.conv_kernel = ssm_state_size, conv_kernel
        self.use_conv_bias, self.use_bias, self.chunk_size = use_conv_bias, use_bias, chunk_size
        self.time_step_min, self.time_step_max, self.time_step_floor = time_step_min, time_step_max, time_step_floor
        self.initializer_range, self.rescale_prenorm_residual = initializer_range, rescale_prenorm_residual
        self.use_cache = use_cache
        self.mamba_hidden_act = kwargs.pop("mamba_hidden_act", "silu")
        self.attention_bias = bool(kwargs.pop("attention_bias", False))  # NemotronH attention has no biases
        # NemotronH configs repeat the Mamba projection bias as mamba_proj_bias; its mixer reads use_bias.
        kwargs.pop("mamba_proj_bias", None)
        self.mamba_proj_bias = use_bias
        if self.mlp_hidden_act not in ("relu2", "silu") or self.mamba_hidden_act != "silu":
            raise ValueError(f"mlp_hidden_act / mamba_hidden_act: unsupported ({mlp_hidden_act!r}, "
                             f"{self.mamba_hidden_act!r})")  # fmt: skip
        # Skips ElasticHybridConfig.__init__ on purpose: its fields are the properties below.
        super(ElasticHybridConfig, self).__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    # --- the elastic hybrid model's names, read from the NemotronH fields -------------------------------------
    pattern = property(lambda self: self.hybrid_override_pattern)
    norm_eps = property(lambda self: self.layer_norm_epsilon)
    mamba_n_groups = property(lambda self: self.n_groups)
    mlp_activation = property(lambda self: self.mlp_hidden_act)
    mlp_gated = property(lambda self: False)
    rope_theta = property(lambda self: None)  # NemotronH attention has no positional encoding

    def layer_width(self, layer: int) -> int:
        """Block `layer`'s width: its own intermediate size ('-'), else the global heads ('*', 'M')."""
        block = self.block_configs[layer]
        if block["block_type"] == "mlp":
            return block["intermediate_size"]
        return self.num_attention_heads if block["block_type"] == "attention" else self.mamba_num_heads

    def get_nemotron_h_config_for_layer(self, layer: int) -> NemotronHPuzzleConfig:
        """This config with block `layer`'s own fields set (its `intermediate_size` for an MLP block): the
        per-layer view engines ask for while building each block."""
        view = copy.copy(self)
        for key, value in self.block_configs[layer].items():
            if key != "block_type":
                setattr(view, key, value)
        return view
