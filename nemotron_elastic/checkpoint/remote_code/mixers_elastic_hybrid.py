# SPDX-License-Identifier: Apache-2.0
"""The three mixers of the exported elastic hybrid model: Mamba2 ('M'), grouped-query attention ('*'), MLP ('-').

Copied into heterogeneous Hugging Face exports written by nemotron-elastic; needs only torch (and transformers'
RoPE registry for scaled RoPE, `RotaryEmbedding`). Each mixer takes
its own width (one layer of a per-layer model), so layers may differ. The math mirrors nemotron_elastic's
model/mamba2.py, attention.py and mlp.py on their full-width path; parameter names are those of transformers'
NemotronH (`in_proj`, `conv1d`, `dt_bias`, `A_log`, `D`, `norm`, `out_proj`, `q_proj`..., `up_proj`...).

Decoding state is plain tensors: a Mamba layer keeps (conv inputs (B, C, K-1), SSM state (B, H, P, N)), an
attention layer keeps (keys, values), each (B, Hkv, S, hd).

Official implementation: transformers `NemotronHMamba2Mixer.torch_forward`, `NemotronHAttention`,
`LlamaAttention`, `NemotronHMLP`, `LlamaMLP`; mamba_ssm `modules/mamba2_simple.py`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .ssd_elastic_hybrid import compute_dtype, gated_group_rms_norm, ssd_chunked, ssd_step


class GatedGroupRMSNorm(nn.Module):
    """Mamba2's grouped gated RMSNorm (a module so that its weight is named `mixer.norm.weight`)."""

    def __init__(self, dim: int, num_groups: int, eps: float) -> None:
        super().__init__()
        self.num_groups, self.eps = num_groups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return gated_group_rms_norm(x, z, self.weight, self.num_groups, self.eps)


class Mamba2Mixer(nn.Module):
    """Packed in_proj(x) = [z (I) | x (I) | B (G*N) | C (G*N) | dt (H)], I = H*P; causal depthwise conv over
    [x|B|C]; SSD scan; grouped gated norm; out_proj. softplus(dt + dt_bias) is clamped below at time_step_min."""

    def __init__(self, config, num_heads: int) -> None:
        super().__init__()
        d, p, g, n = config.hidden_size, config.mamba_head_dim, config.mamba_n_groups, config.ssm_state_size
        self.num_heads, self.head_dim, self.num_groups, self.state_size = num_heads, p, g, n
        self.conv_kernel, self.chunk_size, self.dt_min = (
            config.conv_kernel,
            config.chunk_size,
            config.time_step_min,
        )
        inner = num_heads * p
        self.conv_dim = inner + 2 * g * n
        self.in_proj = nn.Linear(d, inner + self.conv_dim + num_heads, bias=config.mamba_proj_bias)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, config.conv_kernel, groups=self.conv_dim, bias=config.use_conv_bias
        )
        self.dt_bias = nn.Parameter(torch.zeros(num_heads))
        self.A_log = nn.Parameter(torch.zeros(num_heads))
        self.D = nn.Parameter(torch.ones(num_heads))
        self.norm = GatedGroupRMSNorm(inner, g, config.norm_eps)
        self.out_proj = nn.Linear(inner, d, bias=config.mamba_proj_bias)

    def empty_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero conv inputs and SSM state: the start of a sequence."""
        conv = like.new_zeros(batch, self.conv_dim, self.conv_kernel - 1)
        ssm = torch.zeros(
            batch,
            self.num_heads,
            self.head_dim,
            self.state_size,
            dtype=compute_dtype(like.dtype),
            device=like.device,
        )
        return conv, ssm

    def forward(
        self, x: torch.Tensor, state: tuple | None = None, pad_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple | None]:
        """x: (B, T, D) -> (B, T, D), and the new state when `state` is given.

        pad_mask: (B, T) with 0 at padding positions or None. The conv inputs of padded positions are zeroed
        (after in_proj, so that its bias does not leak in) and so are its outputs there: left padding then
        leaves the conv window and the SSM state of the real tokens exactly as without it.
        """
        bsz, t, _ = x.shape
        h, p, g, n = self.num_heads, self.head_dim, self.num_groups, self.state_size
        inner = h * p
        z, xbc, dt = self.in_proj(x).split([inner, self.conv_dim, h], dim=-1)
        if pad_mask is not None:
            xbc = xbc * pad_mask[..., None].to(xbc.dtype)
        xbc = xbc.transpose(1, 2)  # (B, C, T)
        if state is None:
            xbc = F.conv1d(
                xbc, self.conv1d.weight, self.conv1d.bias, padding=self.conv_kernel - 1, groups=self.conv_dim
            )
            xbc, new_conv = xbc[..., :t], None
        else:  # the cached K-1 inputs play the role of the left zero padding
            full = torch.cat([state[0], xbc], dim=-1)  # (B, C, K-1+T)
            new_conv = full[..., full.shape[-1] - (self.conv_kernel - 1) :]
            xbc = F.conv1d(full, self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)  # (B, C, T)
        xbc = F.silu(xbc).transpose(1, 2)  # (B, T, C)
        if pad_mask is not None:
            xbc = xbc * pad_mask[..., None].to(xbc.dtype)
        xs, b_mat, c_mat = xbc.split([inner, g * n, g * n], dim=-1)

        cdt = compute_dtype(x.dtype)
        dt = F.softplus(dt.to(cdt) + self.dt_bias.to(cdt)).clamp(min=self.dt_min)  # (B, T, H)
        a = -torch.exp(self.A_log.to(cdt))  # (H,)
        xs = xs.reshape(bsz, t, h, p)
        b_mat, c_mat = b_mat.reshape(bsz, t, g, n), c_mat.reshape(bsz, t, g, n)
        if state is None:
            y, _ = ssd_chunked(xs, dt, a, b_mat, c_mat, self.chunk_size, D=self.D)
            new_state = None
        elif t == 1:  # recurrent step: O(1) per token
            y, ssm = ssd_step(state[1], xs[:, 0], dt[:, 0], a, b_mat[:, 0], c_mat[:, 0], D=self.D)
            y, new_state = y[:, None], (new_conv, ssm)
        else:  # a chunk continuing from the cached state
            y, ssm = ssd_chunked(xs, dt, a, b_mat, c_mat, self.chunk_size, D=self.D, initial_state=state[1])
            new_state = (new_conv, ssm)
        y = self.norm(y.reshape(bsz, t, inner).to(x.dtype), z)  # (B, T, I)
        return self.out_proj(y), new_state


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for positions (T,) or (B, T) -> cos, sin of shape (T, hd) or (B, 1, T, hd).

    Frequencies in float32 (float64 for float64 models), as transformers computes them.
    """
    cdt = compute_dtype(dtype)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=cdt) / head_dim))
    freqs = positions.to(cdt)[..., None] * inv_freq  # (..., T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (..., T, hd)
    if emb.dim() == 3:  # per-row positions: broadcast over the heads
        emb = emb[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


class RotaryEmbedding:
    """cos / sin at given positions for every RoPE type nemotron-elastic runs (default, linear, llama3, yarn,
    dynamic, longrope). No buffers: nothing to restore after loading weights onto a meta-built model.

    `default` is `rope_cos_sin`; the scaled types take their inverse frequencies and attention factor (yarn,
    longrope) from transformers' public `ROPE_INIT_FUNCTIONS`, called as its `LlamaRotaryEmbedding` calls them.
    Frequencies that depend on the sequence length follow the length of the sequence so far (cached + new
    positions): dynamic rescales past `max_position_embeddings`, longrope switches to its long factors past
    `original_max_position_embeddings`.

    Args:
        rope_parameters: transformers' dict (rope_type, rope_theta, factor, ...; legacy "type" accepted).
        head_dim: rotated dimension (full rotation); max_position_embeddings: the config's.
    """

    def __init__(self, rope_parameters: dict, head_dim: int, max_position_embeddings: int) -> None:
        params = copy.deepcopy(rope_parameters)  # the registry functions add defaults in place
        params.setdefault("rope_type", params.pop("type", "default"))
        self.rope_type, self.theta, self.head_dim = params["rope_type"], float(params["rope_theta"]), head_dim
        self.max_positions = max_position_embeddings
        self.original_max = int(params.get("original_max_position_embeddings") or 0)
        self.scaling, self.inv_freq, self.long_inv_freq = 1.0, None, None
        if self.rope_type != "default":
            from transformers import PretrainedConfig  # deferred: only scaled RoPE needs the registry

            # the attributes the registry reads; hidden / heads only give head_dim back where it is derived
            self._hf = PretrainedConfig()
            self._hf.head_dim, self._hf.hidden_size, self._hf.num_attention_heads = head_dim, head_dim, 1
            self._hf.max_position_embeddings, self._hf.rope_parameters = max_position_embeddings, params
            with torch.device("cpu"):  # real CPU tensors even under a meta-device context
                self.inv_freq, self.scaling = self._registry(self.rope_type)(self._hf, None)
                if self.rope_type == "longrope":  # the frequencies once a sequence outgrows the original length
                    self.long_inv_freq, _ = self._registry("longrope")(self._hf, None, seq_len=self.original_max + 1)

    @staticmethod
    def _registry(rope_type: str):
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        return ROPE_INIT_FUNCTIONS[rope_type]

    def __call__(self, positions: torch.Tensor, seq_len: int, dtype: torch.dtype):
        """positions (T,) or (B, T) of a sequence of `seq_len` positions so far (cache + T) -> cos, sin of
        shape (T, hd) or (B, 1, T, hd) in `dtype`."""
        if self.rope_type == "default":
            return rope_cos_sin(positions, self.head_dim, self.theta, dtype)
        inv_freq = self.inv_freq
        if self.rope_type == "dynamic" and seq_len > self.max_positions:
            # transformers passes max(position_ids) + 1 as an int64 tensor: the new base is float32 arithmetic
            with torch.device("cpu"):
                inv_freq, _ = self._registry("dynamic")(self._hf, None, seq_len=torch.tensor(seq_len))
        elif self.rope_type == "longrope" and seq_len > self.original_max:
            inv_freq = self.long_inv_freq
        cdt = compute_dtype(dtype)
        freqs = positions.to(cdt)[..., None] * inv_freq.to(device=positions.device, dtype=cdt)  # (..., T, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        if emb.dim() == 3:  # per-row positions: broadcast over the heads
            emb = emb[:, None]
        return (emb.cos() * self.scaling).to(dtype), (emb.sin() * self.scaling).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on x (B, H, T, hd)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class Attention(nn.Module):
    """Grouped-query attention via SDPA; query heads of a KV group are contiguous; scale 1/sqrt(head_dim)."""

    def __init__(self, config, num_heads: int) -> None:
        super().__init__()
        d, hd, kv, bias = (
            config.hidden_size,
            config.head_dim,
            config.num_key_value_heads,
            config.attention_bias,
        )
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, kv, hd
        self.q_proj = nn.Linear(d, num_heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, kv * hd, bias=bias)
        self.v_proj = nn.Linear(d, kv * hd, bias=bias)
        self.o_proj = nn.Linear(num_heads * hd, d, bias=bias)

    def empty_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        empty = like.new_zeros(batch, self.num_kv_heads, 0, self.head_dim)
        return empty, empty

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        state: tuple | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple | None]:
        """x: (B, T, D) -> (B, T, D) and the new (k, v) when `state` is given.

        key_mask: (B, S) bool over all keys (cached + new), False at padding, or None (no padding).
        """
        bsz, t, _ = x.shape
        q = self.q_proj(x).view(bsz, t, -1, self.head_dim).transpose(1, 2)  # (B, Hq, T, hd)
        k = self.k_proj(x).view(bsz, t, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(bsz, t, -1, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if state is not None:
            k, v = torch.cat([state[0], k], dim=2), torch.cat([state[1], v], dim=2)  # (B, Hkv, S, hd)
            state = (k, v)
        s = k.shape[2]
        past = s - t
        mask, causal = None, past == 0 and t > 1 and key_mask is None
        if key_mask is not None or (past > 0 and t > 1):
            rows = past + torch.arange(t, device=x.device)[:, None]  # (T, 1) absolute query positions
            cols = torch.arange(s, device=x.device)[None, :]  # (1, S)
            mask = cols <= rows  # (T, S) causal
            if key_mask is not None:
                # padded keys are hidden; every query still sees itself, so no softmax row is empty (no NaN)
                mask = (mask & key_mask[:, None, None, :].bool()) | (cols == rows)  # (B, 1, T, S)
        groups = q.shape[1] // k.shape[1]
        if groups > 1:  # (B, Hkv, S, hd) -> (B, Hq, S, hd)
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, Hq, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(bsz, t, -1)), state


class MLP(nn.Module):
    """NemotronH: down(relu(up(x))^2); Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, config, intermediate_size: int) -> None:
        super().__init__()
        d, bias = config.hidden_size, config.mlp_bias
        self.gated = config.mlp_gated
        self.relu2 = config.mlp_activation == "relu2"
        if self.gated:
            self.gate_proj = nn.Linear(d, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(d, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, d, bias=bias)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square() if self.relu2 else F.silu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up_proj(x)
        h = self.act(self.gate_proj(x)) * h if self.gated else self.act(h)
        return self.down_proj(h)
