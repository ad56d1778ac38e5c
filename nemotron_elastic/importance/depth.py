# SPDX-License-Identifier: Apache-2.0
"""Depth importance: normalized MSE of the logits when layers are dropped (iterative greedy), with the one-shot
form and Block Importance for comparison.

Score of layer j given the already dropped set R (Nemotron Elastic, Sec. "Depth importance";
docs/METHOD.md 4.3):

    s_j = sum_{B,L,V} (M_full - M_{-(R+j)})^2 / sum_{B,L,V} M_full^2

where a dropped layer passes its input through (y_{j+1} = y_j). Iterative: drop the layer with the smallest
score, re-score the remaining layers, repeat (the Nemotron Nano 2 report's recipe). One-shot: the step-0
scores (every layer dropped alone). Block Importance (ShortGPT https://arxiv.org/abs/2403.03853; Minitron;
Model-Optimizer's current depth score): 1 - cos(block input, block output), averaged over tokens.

Two exact savings make the iterative search cheaper than re-running the model per candidate
(`iterative_depth_naive`, kept as the reference and the benchmark baseline):

1. Prefix reuse. The hidden states at the input of every remaining layer of the current model are cached
   (the states after a drop are those of the winning candidate's run, kept while scoring). The candidate
   "drop j" starts from the cached input of layer j and runs only the layers after j: on average half the
   stack instead of all of it.
2. The LM head through its Gram matrix. With n = norm_f(h) and logits W n (no bias),
   sum (W n_full - W n)^2 = sum d^T (W^T W) d with d = n_full - n, so each candidate costs D^2 per token
   instead of V*D (V = 49152 >> D = 576 for SmolLM2) and the full logits are never materialised.
   The error is computed in float32 (float64 for float64 models), outside autocast.

The saving against the naive search, with identical drop orders, is measured by `benchmarks/depth_speed.py`
(`benchmarks/results/depth_speed.json`, docs/importance.md).
Memory: the cache and the best candidate's run hold up to 2 * (L + 1) * N * T * D hidden-state values.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..config.spec import SubnetSpec
from ..model.hybrid import HybridLM
from ..model.norm import compute_dtype, rms_norm
from .ranking import DepthRanking

Rope = tuple[torch.Tensor, torch.Tensor] | None


def _rope(model: HybridLM, seq_len: int, h: torch.Tensor) -> Rope:
    return model.rope(0, seq_len, h)  # the model's own RoPE, scaled types included


def _run(model: HybridLM, h: torch.Tensor, layers: list[int], rope: Rope) -> list[torch.Tensor]:
    """Run `layers` in order from h (B, T, D); returns [h, input of layers[1], ..., output of layers[-1]]."""
    states = [h]
    for i in layers:
        h, _ = model.layers[i](h, rope)
        states.append(h)
    return states


def _full_states(model: HybridLM, chunks: list[torch.Tensor]) -> tuple[list[list[torch.Tensor]], list[Rope]]:
    """The full model's hidden states per chunk: [input of layer 0, ..., input of layer L-1, final state]."""
    states, ropes = [], []
    for ids in chunks:
        h = model.embeddings(ids)  # (B, T, D)
        ropes.append(_rope(model, ids.shape[1], h))
        states.append(_run(model, h, list(range(model.config.num_layers)), ropes[-1]))
    return states, ropes


def _block_importance(states: list[list[torch.Tensor]], cdt: torch.dtype) -> list[float]:
    """Mean over tokens of 1 - cos(input, output) of every layer, from `_full_states`."""
    num_layers = len(states[0]) - 1
    # on the states' device: a CPU total cannot take in-place adds of CUDA scalars; `.tolist()` brings it back
    total, tokens = torch.zeros(num_layers, dtype=torch.float64, device=states[0][0].device), 0
    for s in states:
        for j in range(num_layers):
            cos = torch.nn.functional.cosine_similarity(s[j].to(cdt), s[j + 1].to(cdt), dim=-1)  # (B, T)
            total[j] += (1 - cos).sum().double()
        tokens += s[0].shape[0] * s[0].shape[1]
    return (total / tokens).tolist()


def _check_drops(model: HybridLM, max_drops: int | None) -> int:
    layers = model.config.num_layers
    if layers < 2:
        raise ValueError("depth ranking: the model has a single layer, nothing can be dropped")
    max_drops = layers - 1 if max_drops is None else max_drops
    if not 1 <= max_drops <= layers - 1:
        raise ValueError(f"max_drops: must be in [1, {layers - 1}], got {max_drops}")
    return max_drops


def _complete(drop_order: list[int], last_scores: dict[int, float], num_layers: int) -> list[int]:
    """Append the layers the search did not drop, by ascending score at the last step (least important first)."""
    rest = sorted((s, j) for j, s in last_scores.items() if j not in drop_order)
    order = drop_order + [j for _, j in rest]
    return order if len(order) == num_layers else order + [j for j in range(num_layers) if j not in order]


@torch.no_grad()
def depth_ranking(
    model: HybridLM,
    samples: torch.Tensor,
    max_drops: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> DepthRanking:
    """Iterative normalized-MSE depth ranking (fast form), plus one-shot and Block Importance scores.

    Args:
        model: the parent (run under autocast for bf16 speed; the error is computed in float32).
        samples: (N, T) calibration token ids.
        max_drops: greedy steps to search (default: num_layers - 1). The layers never dropped are appended to
            the drop order by their score at the last step.
        batch_size: rows per forward.
        progress: show a tqdm bar.

    Returns:
        A DepthRanking: `drop_order` (all layers, least important first), `step_scores` (max_drops steps),
        `one_shot`, `block_importance`.
    """
    num_layers = model.config.num_layers
    max_drops = _check_drops(model, max_drops)
    device = next(model.parameters()).device
    chunks = [c.to(device) for c in samples.split(batch_size)]
    kept = list(range(num_layers))
    states, ropes = _full_states(model, chunks)  # per chunk: inputs of every kept layer, then the final state

    with torch.autocast(device.type, enabled=False):
        cdt = compute_dtype(model.lm_head.weight.dtype)
        w = model.lm_head.weight.to(cdt)
        gram = w.T @ w  # (D, D): sum over the vocabulary of the logits' squared error is d^T gram d
        norm_w, eps = model.norm_f.weight, model.norm_f.eps
        ref = [rms_norm(s[-1].to(cdt), norm_w, eps) for s in states]  # (B, T, D) per chunk
        energy = sum(((n @ gram) * n).sum() for n in ref)  # sum M_full^2
        bi = _block_importance(states, cdt)

    def nmse(chunk: int, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, enabled=False):
            d = rms_norm(h.to(cdt), norm_w, eps) - ref[chunk]  # (B, T, D)
            return ((d @ gram) * d).sum()

    drop_order: list[int] = []
    step_scores: list[dict[int, float]] = []
    total = sum(num_layers - t for t in range(max_drops))
    with tqdm(total=total, desc="depth", unit="cand", disable=not progress) as bar:
        for _ in range(max_drops):
            scores, best = {}, None
            for pos, j in enumerate(kept):
                # drop j: start from its cached input and run only the kept layers after it
                runs = [_run(model, s[pos], kept[pos + 1 :], ropes[c]) for c, s in enumerate(states)]
                scores[j] = float(sum(nmse(c, run[-1]) for c, run in enumerate(runs)) / energy)
                if best is None or scores[j] < scores[best[0]]:  # ties keep the lower layer index
                    best = (j, pos, runs)
                bar.update(1)
            k, pos, runs = best
            kept.pop(pos)
            # the winner's run is the new model's forward: its states before k are unchanged, the input of k
            # is now the input of the layer after it, and the run holds the states from there on
            states = [s[:pos] + run for s, run in zip(states, runs)]
            drop_order.append(k)
            step_scores.append(scores)
    return DepthRanking(
        drop_order=_complete(drop_order, step_scores[-1], num_layers),
        step_scores=step_scores,
        one_shot=[step_scores[0][j] for j in range(num_layers)],
        block_importance=bi,
    )


@torch.no_grad()
def block_importance(model: HybridLM, samples: torch.Tensor, batch_size: int = 4) -> list[float]:
    """Block Importance per layer: 1 - cos(block input, block output), averaged over tokens (one forward).

    Args:
        model: the parent.
        samples: (N, T) calibration token ids.
        batch_size: rows per forward.

    Returns:
        One score per layer (high: the block changes the residual stream a lot).
    """
    device = next(model.parameters()).device
    states, _ = _full_states(model, [c.to(device) for c in samples.split(batch_size)])
    with torch.autocast(device.type, enabled=False):
        return _block_importance(states, compute_dtype(model.lm_head.weight.dtype))


@torch.no_grad()
def iterative_depth_naive(
    model: HybridLM,
    samples: torch.Tensor,
    max_drops: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[list[int], list[dict[int, float]]]:
    """The iterative search by brute force: one whole forward (logits and all) per candidate and step.

    The reference for `depth_ranking` (tests) and the baseline of `benchmarks/depth_speed.py`.

    Returns:
        (greedy drop order of length max_drops, step scores).
    """
    cfg = model.config
    max_drops = _check_drops(model, max_drops)
    device = next(model.parameters()).device
    chunks = [c.to(device) for c in samples.split(batch_size)]
    cdt = compute_dtype(model.lm_head.weight.dtype)
    full = [model(ids).to(cdt) for ids in chunks]  # (B, T, V)
    energy = sum(m.square().sum() for m in full)
    kept, drop_order, step_scores = list(range(cfg.num_layers)), [], []
    total = sum(cfg.num_layers - t for t in range(max_drops))
    with tqdm(total=total, desc="depth (naive)", unit="cand", disable=not progress) as bar:
        for _ in range(max_drops):
            scores = {}
            for j in kept:
                spec = SubnetSpec.from_dict({"layers": [i for i in kept if i != j]}, cfg)
                err = sum(
                    (m - model(ids, subnet=spec).to(cdt)).square().sum() for ids, m in zip(chunks, full)
                )
                scores[j] = float(err / energy)
                bar.update(1)
            k = min(kept, key=lambda j: (scores[j], j))
            kept.remove(k)
            drop_order.append(k)
            step_scores.append(scores)
    return drop_order, step_scores
