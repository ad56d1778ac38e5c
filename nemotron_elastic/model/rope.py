# SPDX-License-Identifier: Apache-2.0
"""RoPE cos / sin tables of a native model, for every RoPE type it runs, equal to transformers' own.

`default` RoPE is the model's own computation (`attention.rope_cos_sin`). The scaled types take their inverse
frequencies and attention factor from transformers' public registry `ROPE_INIT_FUNCTIONS`, called with the
same arguments transformers' `LlamaRotaryEmbedding` passes:

| rope_type | inverse frequencies                                  | cos / sin multiplied by          |
|-----------|------------------------------------------------------|----------------------------------|
| default   | 1 / theta^(2i / hd)                                  | 1                                |
| linear    | registry, once                                       | 1                                |
| llama3    | registry, once                                       | 1                                |
| yarn      | registry, once                                       | its attention factor (mscale)    |
| longrope  | registry: short factors, or long ones once the       | its attention factor             |
|           | sequence is longer than original_max_position_emb.   |                                  |
| dynamic   | registry at the sequence length when that exceeds    | 1                                |
|           | max_position_embeddings, else the unscaled ones      |                                  |

"The sequence length" is the number of positions seen so far including the new tokens (cache + T), what
transformers' `dynamic_rope_update` reads from the position ids. It is a pure function of that length here;
transformers' dynamic RoPE also remembers the largest length it has seen (until a call shorter than
max_position_embeddings resets it), so the two agree on any first call and on a growing sequence (decoding).
For dynamic and longrope RoPE, a cached prefix was rotated with the frequencies of its own time, so decoding
past the switch length differs from one full forward pass, as it does in transformers.

There are no buffers: the frequencies that never change are computed once on the CPU at construction, from
the config alone (under a meta or fake device context too), and moved to the input's device per forward.
A forward changes nothing (the serving engine runs one model from several threads); only dynamic RoPE's
registry call past max_position_embeddings re-standardises the private config's rope_parameters in place,
which sets keys that are already there to the values they have.

Shapes: T new tokens, hd head dim.

Official implementation: transformers `modeling_rope_utils.py` (`ROPE_INIT_FUNCTIONS`, `dynamic_rope_update`)
and `models/llama/modeling_llama.py` (`LlamaRotaryEmbedding`) (5.24).
"""

from __future__ import annotations

import copy

import torch

from ..config.model import ModelConfig
from .attention import rope_cos_sin
from .norm import compute_dtype

Rope = tuple[torch.Tensor, torch.Tensor]


def _hf_rope_config(config: ModelConfig):
    """The attributes transformers' RoPE functions read, on a bare `PreTrainedConfig` (head_dim is explicit,
    so hidden_size / num_attention_heads only have to give it back when a function derives it)."""
    from transformers import PreTrainedConfig  # deferred: only scaled RoPE needs transformers (~0.5 s import)

    hf = PreTrainedConfig()
    hf.head_dim = config.head_dim
    hf.hidden_size, hf.num_attention_heads = config.head_dim, 1
    hf.max_position_embeddings = config.max_position_embeddings
    hf.rope_parameters = copy.deepcopy(config.rope_parameters)  # the functions add defaults in place
    return hf


def _registry(rope_type: str):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # deferred: see _hf_rope_config

    return ROPE_INIT_FUNCTIONS[rope_type]


class RotaryEmbedding:
    """cos / sin of one model's RoPE at any positions. A plain object, not a module: it holds no parameters
    or buffers, so building the model on the meta device and loading weights with `assign=True` leaves
    nothing to restore.

    Args:
        config: a config with RoPE (`rope_theta` set); `rope_parameters` selects a scaled type.
    """

    def __init__(self, config: ModelConfig) -> None:
        if config.rope_theta is None:
            raise ValueError("rope_theta: a RotaryEmbedding needs RoPE (rope_theta is None)")
        self.rope_type = config.rope_type
        self.head_dim, self.theta = config.head_dim, config.rope_theta
        self.max_positions = config.max_position_embeddings
        self.original_max = int((config.rope_parameters or {}).get("original_max_position_embeddings") or 0)
        self.scaling = 1.0
        self.inv_freq: torch.Tensor | None = None  # (hd/2,) float32 on the CPU; None for default RoPE
        self.long_inv_freq: torch.Tensor | None = None  # longrope's frequencies for long sequences
        self._hf = None
        if self.rope_type != "default":
            self._hf = _hf_rope_config(config)
            with torch.device("cpu"):  # real CPU tensors even inside `with torch.device("meta")`
                self.inv_freq, self.scaling = _registry(self.rope_type)(self._hf, None)
                if self.rope_type == "longrope":  # what transformers computes once a sequence is longer
                    longrope = _registry("longrope")
                    self.long_inv_freq, _ = longrope(self._hf, None, seq_len=self.original_max + 1)

    def frequencies(self, seq_len: int) -> torch.Tensor:
        """Inverse frequencies (hd/2,) float32 (CPU) for a sequence of `seq_len` positions (scaled types)."""
        if self.rope_type == "dynamic" and seq_len > self.max_positions:
            # transformers passes max(position_ids) + 1 as an int64 tensor: the new base is float32 arithmetic
            with torch.device("cpu"):
                inv_freq, _ = _registry("dynamic")(self._hf, None, seq_len=torch.tensor(seq_len))
            return inv_freq
        if self.rope_type == "longrope" and seq_len > self.original_max:
            return self.long_inv_freq
        return self.inv_freq

    def cos_sin(self, start: int, length: int, device: torch.device, dtype: torch.dtype) -> Rope:
        """cos, sin (T, hd) in `dtype` on `device` for positions start .. start + length - 1, the last
        `length` of a sequence of start + length positions.

        Frequencies times positions run in float32 (float64 for a float64 model), as in `rope_cos_sin`."""
        positions = torch.arange(start, start + length, device=device)
        if self.rope_type == "default":
            return rope_cos_sin(positions, self.head_dim, self.theta, dtype)
        cdt = compute_dtype(dtype)
        inv_freq = self.frequencies(start + length).to(device=device, dtype=cdt)
        freqs = positions.to(cdt)[:, None] * inv_freq[None, :]  # (T, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (T, hd)
        return (emb.cos() * self.scaling).to(dtype), (emb.sin() * self.scaling).to(dtype)

    def cos_sin_rows(self, positions: torch.Tensor, seq_lens: torch.Tensor, dtype: torch.dtype) -> Rope:
        """cos, sin (B, 1, T, hd) for per-row positions (B, T) of rows whose sequences have `seq_lens` (B,)
        positions so far (a batch of rows at different lengths; the types whose frequencies depend on the
        length take each row's own). Every value equals `cos_sin` of that row alone."""
        cdt = compute_dtype(dtype)
        if self.rope_type == "default":
            cos, sin = rope_cos_sin(positions.reshape(-1), self.head_dim, self.theta, dtype)
            shape = (*positions.shape, self.head_dim)
            return cos.view(shape)[:, None], sin.view(shape)[:, None]
        inv = torch.stack([self.frequencies(int(n)) for n in seq_lens.tolist()]) if len(seq_lens) else (
            self.inv_freq[None])  # (B, hd/2)
        freqs = positions.to(cdt)[:, :, None] * inv.to(device=positions.device, dtype=cdt)[:, None, :]  # (B, T, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        return (emb.cos() * self.scaling).to(dtype)[:, None], (emb.sin() * self.scaling).to(dtype)[:, None]

