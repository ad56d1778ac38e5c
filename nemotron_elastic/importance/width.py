# SPDX-License-Identifier: Apache-2.0
"""Width importance from forward activations (no gradients), one pass over the calibration samples.

Per axis (docs/METHOD.md 4.1-4.2; Minitron https://arxiv.org/abs/2407.14679 Sec. 2; Minitron-SSM
https://arxiv.org/abs/2504.11409 Sec. 3), with every activation reduced by `hooks.Aggregation`:

- hidden channels: the output of every block's pre-norm (the input of each mixer), one score per channel and
  layer, summed over layers (Model-Optimizer sums over every norm that feeds a linear layer).
- MLP neurons, `mlp_point="pre"` (the paper): the pre-activation X W1^T, i.e. the input of the
  activation function: the up projection's output for NemotronH's down(act(up(x))), and the gate
  projection's output for a gated MLP down(act(gate(x)) * up(x)), where up(x) is a linear branch that is
  never activated (the gate output ranks better than the up output; docs/importance.md).
  `"post"` (default): the down projection's input, the neuron's post-activation value (Model-Optimizer's
  choice, the input of linear_fc2). It is the default because it ranks better than "pre" zero-shot on both
  models measured, the gated SmolLM2-135M and the relu2 tiny-hybrid (the numbers: docs/importance.md).
- attention heads, `attention_point="head_output"` (default): the magnitude of each head's contribution to the
  residual stream, ||W_o[:, h] y_h|| per token, computed through the per-head Gram matrix
  W_o[:, h]^T W_o[:, h] (hd^2 rather than D*hd per head and token). `"o_proj_input"` (Model-Optimizer): the
  o_proj input y_h, scored per channel, then the L2 norm over each head's channels. The default deviates
  from Model-Optimizer for two measured reasons: the o_proj input cannot see a head whose output columns
  are zero (query heads of a KV group share V, so no head's input is ever zero), and on SmolLM2 cut to 50%
  of its heads it ranks worse than a random order, while the head output ranks far better
  (docs/importance.md). Heads are ranked inside each KV group.
- Mamba (group-aware), `mamba_point="x"` (the paper, Minitron-SSM and Model-Optimizer): the x branch of in_proj
  (before the conv), scored per inner channel s[h, d]; head channels by ||s[:, d]||_2 over all heads (one
  ranking shared by every head of the layer), then heads by ||s[h, D_top]||_2 over the top
  `mamba_head_dim_target` channels (default: all), ranked inside each B/C group. B and C are never ranked.
  `"out_proj_input"` (default): the same per-channel statistic taken at out_proj's input, i.e. after the
  scan, the D skip and the z-gated norm: what each head and channel actually sends to the residual stream
  (the Mamba analogue of the MLP's "post"). It is the default because it ranks better than the x branch
  on the tiny-hybrid (docs/importance.md: Mamba heads cut to 75% / 50%, perplexity 55.9 / 88.5 against
  56.8 / 94.4 for "x" and 65.4 / 124.0 for random orders; head channels at 50%, 77.3 against 107.7).

Official reference: Model-Optimizer `modelopt/torch/prune/plugins/mcore_minitron.py`
(`_register_mlp_importance`, `_register_attention_importance`, `_register_mamba_mixer_importance`).
"""

from __future__ import annotations

from typing import Literal

import torch
from tqdm.auto import tqdm

from ..model.attention import Attention
from ..model.hybrid import HybridLM
from ..model.mamba2 import Mamba2Mixer
from ..model.mlp import MLP
from ..model.norm import compute_dtype
from .hooks import Aggregation, Pick, collect, input_of, output_of
from .ranking import AxisRanking, Ranking, order_by_scores

MlpPoint = Literal["pre", "post"]
AttentionPoint = Literal["o_proj_input", "head_output"]
MambaPoint = Literal["x", "out_proj_input"]


def _x_branch(mixer: Mamba2Mixer) -> Pick:
    inner = mixer.num_heads * mixer.head_dim
    return lambda args, out: out[..., inner : 2 * inner]  # packed [z | x | B | C | dt]: the x rows


def _head_output_norms(mixer: Attention) -> Pick:
    """Per-token norm of each head's o_proj contribution: (B, L, Hq*hd) -> (B, L, Hq)."""

    def pick(args: tuple, out: torch.Tensor) -> torch.Tensor:
        hq, hd = mixer.num_heads, mixer.head_dim
        cdt = compute_dtype(args[0].dtype)  # float32 for bf16 activations, float64 stays float64
        w = mixer.o_proj.weight.to(cdt).reshape(-1, hq, hd)  # (D, Hq, hd)
        gram = torch.einsum("dhi,dhj->hij", w, w)  # (Hq, hd, hd)
        y = args[0].to(cdt).unflatten(-1, (hq, hd))  # (B, L, Hq, hd)
        sq = torch.einsum("blhi,hij,blhj->blh", y, gram, y)  # (B, L, Hq) = ||W_h y_h||^2
        return sq.clamp_min(0).sqrt()

    return pick


def width_points(
    model: HybridLM,
    mlp_point: MlpPoint = "post",
    attention_point: AttentionPoint = "head_output",
    mamba_point: MambaPoint = "out_proj_input",
) -> dict[str, tuple[torch.nn.Module, Pick]]:
    """The hook points of every width score: name -> (module, pick), names `<kind>.<layer>`."""
    if mamba_point not in ("x", "out_proj_input"):
        raise ValueError(f"mamba_point: expected 'x' or 'out_proj_input', got {mamba_point!r}")
    if mlp_point not in ("pre", "post"):
        raise ValueError(f"mlp_point: expected 'pre' or 'post', got {mlp_point!r}")
    if attention_point not in ("o_proj_input", "head_output"):
        raise ValueError(
            f"attention_point: expected 'o_proj_input' or 'head_output', got {attention_point!r}"
        )
    points: dict[str, tuple[torch.nn.Module, Pick]] = {}
    for i, block in enumerate(model.layers):
        points[f"norm.{i}"] = (block.norm, output_of)
        mixer = block.mixer
        if isinstance(mixer, MLP):
            pre = mixer.gate_proj if mixer.gated else mixer.up_proj  # the activation function's input
            points[f"mlp.{i}"] = (pre, output_of) if mlp_point == "pre" else (mixer.down_proj, input_of)
        elif isinstance(mixer, Attention):
            pick = input_of if attention_point == "o_proj_input" else _head_output_norms(mixer)
            points[f"attention.{i}"] = (mixer.o_proj, pick)
        else:
            mamba = (mixer.in_proj, _x_branch(mixer)) if mamba_point == "x" else (mixer.out_proj, input_of)
            points[f"mamba.{i}"] = mamba  # both: (B, L, H*P), one value per inner channel
    return points


@torch.no_grad()
def width_stats(
    model: HybridLM,
    samples: torch.Tensor,
    batch_size: int = 4,
    aggregation: Aggregation | None = None,
    mlp_point: MlpPoint = "post",
    attention_point: AttentionPoint = "head_output",
    progress: bool = False,
    mamba_point: MambaPoint = "out_proj_input",
) -> dict[str, torch.Tensor]:
    """Run the calibration samples through `model` and return the per-unit statistic of every hook point.

    Args:
        model: the parent (any dtype; run it under autocast for bf16 speed).
        samples: (N, L) token ids.
        batch_size: rows per forward.
        aggregation: the reduction over sequence and batch (default mean / L2).
        mlp_point, attention_point, mamba_point: see the module docstring.
        progress: show a tqdm bar.

    Returns:
        `<kind>.<layer>` -> (C,) float64 scores: norm (D,), mlp (F,), attention (Hq*hd,) or (Hq,), mamba (H*P,).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    points = width_points(model, mlp_point, attention_point, mamba_point)
    try:
        with collect(points, aggregation) as stats:
            for start in tqdm(
                range(0, samples.shape[0], batch_size), desc="width", unit="batch", disable=not progress
            ):
                # last_only: the hooks see every position; only the LM head (not scored) runs on one position
                model(samples[start : start + batch_size].to(device), last_only=True)
    finally:
        model.train(was_training)
    return {name: stat.value() for name, stat in stats.items()}


def rank_width(
    model: HybridLM,
    stats: dict[str, torch.Tensor],
    attention_point: AttentionPoint = "head_output",
    mamba_head_dim_target: int | None = None,
) -> Ranking:
    """Turn `width_stats` into orders on every width axis (grouped axes ranked inside their groups).

    Args:
        model: the parent the statistics came from.
        stats: the output of `width_stats`.
        attention_point: the point the attention statistics were taken at.
        mamba_head_dim_target: head channels used to score Mamba heads (the top ones); None uses all.
    """
    cfg = model.config
    hidden = sum(stats[f"norm.{i}"] for i in range(cfg.num_layers))  # (D,)
    ranking = Ranking(hidden=AxisRanking(order_by_scores(hidden), hidden.tolist()))
    for i, block in enumerate(model.layers):
        mixer = block.mixer
        if isinstance(mixer, MLP):
            scores = stats[f"mlp.{i}"]
            ranking.mlp[i] = AxisRanking(order_by_scores(scores), scores.tolist())
        elif isinstance(mixer, Attention):
            scores = stats[f"attention.{i}"]
            if attention_point == "o_proj_input":
                scores = scores.reshape(mixer.num_heads, mixer.head_dim).norm(dim=1)  # (Hq,)
            ranking.attention_heads[i] = AxisRanking(
                order_by_scores(scores, mixer.num_kv_heads), scores.tolist()
            )
        else:
            s = stats[f"mamba.{i}"].reshape(mixer.num_heads, mixer.head_dim)  # (H, P)
            channel_scores = s.norm(dim=0)  # (P,): one head-channel ranking shared by all heads
            channel_order = order_by_scores(channel_scores)
            top = channel_order[: mamba_head_dim_target or mixer.head_dim]
            head_scores = s[:, top].norm(dim=1)  # (H,)
            ranking.mamba_head_dim[i] = AxisRanking(channel_order, channel_scores.tolist())
            ranking.mamba_heads[i] = AxisRanking(
                order_by_scores(head_scores, mixer.num_groups), head_scores.tolist()
            )
    return ranking


def width_ranking(
    model: HybridLM,
    samples: torch.Tensor,
    batch_size: int = 4,
    aggregation: Aggregation | None = None,
    mlp_point: MlpPoint = "post",
    attention_point: AttentionPoint = "head_output",
    mamba_head_dim_target: int | None = None,
    progress: bool = False,
    mamba_point: MambaPoint = "out_proj_input",
) -> Ranking:
    """Width rankings of `model` from the calibration `samples` (N, L): `width_stats` then `rank_width`."""
    if mamba_head_dim_target is not None and not 1 <= mamba_head_dim_target <= model.config.mamba_head_dim:
        raise ValueError(
            f"mamba_head_dim_target: must be in [1, {model.config.mamba_head_dim}], got {mamba_head_dim_target}"
        )
    stats = width_stats(model, samples, batch_size, aggregation, mlp_point, attention_point, progress, mamba_point)
    return rank_width(model, stats, attention_point, mamba_head_dim_target)
