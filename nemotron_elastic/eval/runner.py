# SPDX-License-Identifier: Apache-2.0
"""Evaluate every budget of a model: held-out perplexity, bits per byte, size, memory, speed, lm-eval tasks.

    result = evaluate_model("runs/elastic/model")                    every trained budget
    result = evaluate_model("exports/half-hf", settings=EvalSettings(seq_len=1024, tasks=["nemotron_heldout"]))

One row per `EvalTarget` (targets.py). The checkpoint is loaded once; each budget runs inside it through
`forward(subnet=...)`, the sliced forward of the served model, so a budget's numbers are those of the
weights that `export --budget` writes (a test checks it against the exported HF folder).

Per row:
- perplexity = exp(mean NLL) over the scored tokens of the held-out stream (`eval/perplexity.py` windows);
- bits per byte = mean NLL (nats / token) x tokens / bytes / ln 2, with the UTF-8 bytes of the decoded
  stream: comparable across tokenizers, unlike perplexity;
- params: the sub-model's exact parameter count (a tied head counted once);
- memory: the cost model's weight and decoding-cache bytes after `seq_len` tokens at batch 1, in the
  model's dtype (`subnet/cost.predicted_memory`), i.e. what serving this budget alone would hold;
- tokens/s: input tokens of the perplexity forward passes per second of their wall time (padding
  included, the first batch left out as warm-up). Measured on a shared machine it is noisy: compare
  budgets of one run, not runs.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.elastic import is_elastic
from ..checkpoint.load import load_model
from ..checkpoint.native import peek_config
from ..io import load_tokenizer, resolve_checkpoint
from ..model.masks import ElasticMasks
from ..subnet.cost import predicted_memory
from .perplexity import token_nll
from .targets import EvalTarget, resolve_targets
from .texts import DEFAULT_SOURCE, EvalText, eval_documents, token_stream


@dataclass
class EvalSettings:
    """How to evaluate (the `eval` command's options)."""

    seq_len: int = 512
    batch_size: int = 4
    stride: int | None = None
    max_tokens: int = 16384
    dtype: str | None = None  # None: as stored
    bf16: bool = False  # bf16 autocast, on the device's type
    device: str = "cpu"  # where the model runs ("cpu", "cuda", "cuda:1"); the numbers come back to the host
    tasks: list[str] = field(default_factory=list)
    task_limit: int | None = None  # lm-eval documents per task
    bootstrap_iters: int = 0


class _TimedModel(torch.nn.Module):
    """Forwards to the model and records (input tokens, seconds) of every call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, float]] = []

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(input_ids, **kwargs)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)  # kernels are asynchronous: wait for them before timing
        self.calls.append((input_ids.numel(), time.perf_counter() - start))
        return out

    def tokens_per_second(self) -> float:
        timed = self.calls[1:] or self.calls  # the first call pays for allocation and kernel selection
        seconds = sum(s for _, s in timed)
        return sum(n for n, _ in timed) / seconds if seconds > 0 else float("nan")


def score_target(
    model: torch.nn.Module, target: EvalTarget, text: EvalText, settings: EvalSettings, progress: bool = False
) -> dict[str, Any]:
    """Perplexity, bits per byte, size, memory and speed of one sub-model on `text` (see module docstring)."""
    masks = None if target.spec.is_full() else ElasticMasks.from_spec(target.spec)
    timed = _TimedModel(model)
    with torch.autocast(torch.device(settings.device).type, dtype=torch.bfloat16, enabled=settings.bf16):
        nll = token_nll(
            timed, text.token_ids, settings.seq_len, settings.batch_size, settings.stride, progress, masks
        )
    scored = nll[~nll.isnan()]
    mean_nll = scored.mean().item()
    dtype = next(model.parameters()).dtype
    memory = predicted_memory(target.spec, settings.seq_len, dtype)
    params = target.spec.param_count()
    return target.describe() | {
        "params": params,
        "param_ratio": params / model.config.num_parameters(),
        "nll": mean_nll,
        "perplexity": math.exp(mean_nll),
        "bits_per_byte": mean_nll * text.token_ids.numel() / text.num_bytes / math.log(2),
        "scored_tokens": scored.numel(),
        "memory_bytes": {"weights": memory["weights"], "cache": memory["cache"], "total": memory["total"]},
        "tokens_per_second": timed.tokens_per_second(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nemotron-elastic", "torch", "transformers", "lm_eval"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def evaluate_model(
    path: str | os.PathLike,
    budgets: list[float] | None = None,
    spec: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    settings: EvalSettings | None = None,
    interpolate: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate the budgets of one model (see the module docstring).

    Args:
        path: an elastic checkpoint, or any native / HF folder or GGUF file.
        budgets / spec / interpolate: which sub-models (`resolve_targets`).
        data: documents to evaluate on (default: the default corpus' held-out split).
        settings: windows, batch, token cap, dtype, device, lm-eval tasks.
        progress: progress bars on stderr.

    Returns:
        {"model", "data", "settings", "rows": [one dict per sub-model], "versions"}.

    Raises:
        ValueError / OSError: bad budgets, spec, data path, task name, or model path; checked before the
            weights are read wherever the check does not need them.
    """
    settings = settings or EvalSettings()
    kind, _ = resolve_checkpoint(path)  # a missing or unsupported model path fails first
    manager = None
    if settings.tasks:
        from .lm_eval_tasks import task_manager  # deferred: lm-eval is an optional extra

        manager = task_manager(settings.tasks, {} if data is None else {"eval_data": str(data)})
    config = peek_config(path)
    targets = resolve_targets(path, config, budgets, spec, interpolate) if config is not None else None
    documents = eval_documents(data)
    tokenizer = load_tokenizer(path)
    if tokenizer is None:
        raise ValueError(f"{path}: the checkpoint has no tokenizer; evaluation needs one to read text")
    model = load_model(path, dtype=settings.dtype, device=settings.device).requires_grad_(False)
    if targets is None:  # HF / GGUF: the config comes with the model
        targets = resolve_targets(path, model.config, budgets, spec, interpolate)
    text = token_stream(
        tokenizer, documents, settings.max_tokens, DEFAULT_SOURCE if data is None else str(data)
    )
    rows = []
    for target in targets:
        row = score_target(model, target, text, settings, progress)
        if settings.tasks:
            from .lm_eval_model import NemotronElasticLM  # deferred: lm-eval is an optional extra
            from .lm_eval_tasks import run_tasks

            lm = NemotronElasticLM.from_model(
                model, tokenizer, target, str(path), settings.batch_size, settings.seq_len
            )
            lm.progress = progress
            row["tasks"] = run_tasks(
                lm, settings.tasks, settings.task_limit, data, settings.bootstrap_iters, manager
            )
        rows.append(row)
    return {
        "model": str(path),
        "kind": "elastic" if Path(path).is_dir() and is_elastic(path) else kind,
        "data": {
            "source": text.source,
            "tokens": text.token_ids.numel(),
            "bytes": text.num_bytes,
            "documents": text.num_documents,
        },
        "settings": asdict(settings) | {"dtype": str(next(model.parameters()).dtype).removeprefix("torch.")},
        "rows": rows,
        "versions": _versions(),
    }
