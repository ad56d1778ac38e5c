# SPDX-License-Identifier: Apache-2.0
"""`score_model`: the `nemotron-elastic score` step, from a parent and calibration text to a sorted parent.

    model path + data path
      -> calibration windows (data/calibration.py; the parent's tokenizer)
      -> width rankings (width.py: hidden, MLP, attention heads, group-aware Mamba heads / head channels)
      -> depth ranking (depth.py: iterative normalized MSE on the logits, on a smaller subset)
      -> reorder the parent by the width rankings (reorder.py: function-preserving)
      -> out_dir/ = native checkpoint (config.yaml, model.safetensors, tokenizer) + ranking.json

The scoring forwards run on `device` in `dtype` (e.g. bfloat16 on a GPU); the weights that are reordered
and saved are the parent's as stored, so scoring in a lower precision never lowers the saved parent's.

Everything is validated before the slow work (output folder, data, tokenizer, token count), and out_dir is
written under a temporary name and renamed when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..checkpoint.load import build_model, read_checkpoint
from ..checkpoint.native import save_native
from ..config.model import ModelConfig
from ..config.yaml_io import load_yaml
from ..data.calibration import read_documents, sample_windows, tokenize_documents
from ..io import CONFIG_NAME, atomic_output_dir, check_output_dir, load_tokenizer, resolve_checkpoint
from .depth import depth_ranking
from .hooks import Aggregation
from .ranking import Ranking
from .reorder import reorder_model
from .width import AttentionPoint, MambaPoint, MlpPoint, width_ranking

RANKING_NAME = "ranking.json"


def score_model(
    model_dir: str | os.PathLike,
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    samples: int = 64,
    seq_len: int = 512,
    depth_samples: int = 8,
    depth_seq_len: int | None = 256,
    max_depth_drops: int | None = None,
    batch_size: int = 4,
    seed: int = 0,
    mlp_point: MlpPoint = "post",
    attention_point: AttentionPoint = "head_output",
    mamba_point: MambaPoint = "out_proj_input",
    aggregation: Aggregation | None = None,
    bf16: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Path:
    """Score every axis of a parent, sort its weights by importance and save it with `ranking.json`.

    Args:
        model_dir: the parent: native folder, HF folder, .gguf file (see `checkpoint.load_model`).
        data_path: calibration text: a .txt / .jsonl (`text` field) / .parquet (`text` column) file or a folder.
        out_dir: the folder to write (native checkpoint + tokenizer + ranking.json).
        samples, seq_len: width calibration windows (N x L tokens).
        depth_samples, depth_seq_len: depth calibration windows (None: seq_len). The iterative search costs
            about num_layers^2 / 4 forwards of this set, so it is kept small (docs/METHOD.md 4.3).
        max_depth_drops: greedy depth steps (None: num_layers - 1); the rest of the drop order follows the
            last step's scores.
        batch_size: rows per forward.
        seed: the calibration window draw.
        mlp_point: "post" (the down projection's input, default) or "pre" (the activation's input, the paper).
        attention_point: "head_output" (each head's o_proj contribution) or "o_proj_input" (Model-Optimizer).
        mamba_point: "out_proj_input" (after the scan and gate, default) or "x" (in_proj's x branch, the paper).
        aggregation: reduction over sequence and batch (default: mean over the sequence, L2 over the batch).
        bf16: run the forwards under bf16 autocast (weights and the saved checkpoint keep their dtype).
        device, dtype: where and in which parameter dtype the scoring forwards run (None: as stored). The
            saved checkpoint keeps the stored dtype whatever this is.
        progress: tqdm bars on stderr.
        overwrite: replace a non-empty out_dir.

    Returns:
        out_dir.

    Raises:
        ValueError / OSError: one line for bad input (missing or empty data, fewer tokens than one sample, a
            model folder without weights or tokenizer, an existing out_dir); nothing is written then.
    """
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    resolve_checkpoint(model_dir)  # a missing or unknown model path fails before the data is read
    docs = read_documents(data_path)
    tokenizer = load_tokenizer(model_dir)
    if tokenizer is None:
        raise ValueError(
            f"{model_dir}: the checkpoint has no tokenizer to tokenize the calibration data with"
        )
    stream = tokenize_documents(docs, tokenizer)
    depth_seq_len = depth_seq_len or seq_len
    width_ids = sample_windows(stream, samples, seq_len, seed)
    depth_ids = sample_windows(stream, depth_samples, depth_seq_len, seed)
    config, stored = read_checkpoint(model_dir)
    # build_model consumes its dict: a shallow copy keeps `stored`. On the CPU in the stored dtype both
    # models share every tensor (`.to` is then a no-op), so this costs no memory there.
    model = build_model(config, dict(stored), dtype, device)

    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        ranking = width_ranking(
            model, width_ids, batch_size, aggregation, mlp_point, attention_point, progress=progress,
            mamba_point=mamba_point,
        )
        ranking.depth = depth_ranking(model, depth_ids, max_depth_drops, batch_size, progress=progress)
    ranking.meta = {
        "model": str(model_dir),
        "data": str(data_path),
        "data_tokens": stream.numel(),
        "samples": samples,
        "seq_len": seq_len,
        "depth_samples": depth_samples,
        "depth_seq_len": depth_seq_len,
        "depth_searched_steps": len(ranking.depth.step_scores),
        "seed": seed,
        "aggregation": (aggregation or Aggregation()).to_dict(),
        "mlp_point": mlp_point,
        "attention_point": attention_point,
        "mamba_point": mamba_point,
        "bf16": bf16,
        "device": device.type,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "reordered": True,  # the saved weights are sorted: every order below is applied
    }
    del model  # the scoring copy; the stored weights are the ones sorted and saved
    model = build_model(config, stored)
    reorder_model(model, ranking)
    with atomic_output_dir(out, overwrite) as tmp:
        save_native(model, tmp, tokenizer)  # tmp is empty: save_native fills it in place
        ranking.save(tmp / RANKING_NAME)
    return out


def load_ranking(model_dir: str | os.PathLike) -> Ranking:
    """The ranking.json stored by `score_model` in a native folder (validated against its config)."""
    folder = Path(model_dir)
    return Ranking.load(folder / RANKING_NAME, load_yaml(ModelConfig, folder / CONFIG_NAME))
