# SPDX-License-Identifier: Apache-2.0
"""ManyInOneEngine: every budget of an elastic checkpoint served from one copy of the weights.

The engine loads the checkpoint once and keeps the table `name -> ServedModel` of `model_table.py`
(`NAME` the full parent, `NAME-0.5` etc. the trained budgets, `NAME-0.6` a budget the router
interpolates). A request names one of them; its tokens run through the parent's *sliced* forward
(`HybridLM.forward(subnet=...)`), i.e. on slices of the shared weight tensors, with a decoding cache of
the sub-model's own size. No weight is stored per budget, so serving three budgets costs the memory of
the parent plus the caches and the sliced forward's per-step temporaries (benchmarks/serve_memory.py
measures it). A plain (non-elastic) model folder serves as one model.

Every request in flight is decoded in one batch by one thread (`decode_loop.py` around model/batcher.py),
the thread that also loaded the model (decode_loop.py says why):
requests join and leave the batch at every step, each stopping at EOS, a stop token id, a stop string or
`max_new_tokens`, with its own sampling parameters and random generator. `stream` yields text deltas as
they are produced and `generate` collects them; both may be called from any number of threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.load import load_model
from ..config.spec import SubnetSpec
from ..io import load_tokenizer
from ..model import cpu_kernels
from ..model.batcher import ContinuousBatcher, SequenceRequest
from ..subnet.cost import cache_profile, predicted_memory
from .decode_loop import DecodeLoop
from .memory import process_rss_bytes, weight_bytes
from .model_table import ModelTable, ServedModel
from .request_stream import GenerationStats, RequestStream, StreamEvent
from .text import chat_prompt_text


def _load(path: Path, dtype: torch.dtype | str | None, device: torch.device | str) -> torch.nn.Module:
    """The served model, in eval mode without grad. On a CPU the decoding kernels are built now (once per
    machine, about a second) rather than at the first request (model/cpu_kernels.py), and a float32 model's
    block weights (and an untied LM head) are stored in tiles when they are, so that every budget reads only
    its own part of the one weight copy (model/tiles.py)."""
    model = load_model(path, dtype=dtype, device=device).requires_grad_(False).eval()
    on_cpu = torch.device(device).type == "cpu" and cpu_kernels.library() is not None
    if on_cpu and next(model.parameters()).dtype == torch.float32:
        model.use_tiled_weights()
    return model


class ContextLengthError(ValueError):
    """Prompt plus requested tokens exceed the context limit."""


@dataclass(frozen=True)
class SamplingParams:
    """How to continue a prompt. temperature 0 is greedy; `stop` strings are cut from the text."""

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


@dataclass
class Completion:
    """A finished request: the whole text, every token id (a final EOS / stop id included)."""

    text: str
    token_ids: list[int]
    finish_reason: str
    stats: GenerationStats


class ManyInOneEngine:
    """One loaded checkpoint, every budget of it servable per request.

    Args:
        path: an elastic checkpoint folder (train output), or any model path `load_model` reads.
        dtype: parameter dtype (None: as stored).
        name: the served name prefix (default: from the folder name).
        device: where the weights live.
        max_context: prompt + completion limit (default: the config's max_position_embeddings).
        kv_cache: "padded" or "paged" KV storage of the batched decoder (model/batch_cache.py).
        prefill_chunk: prompt tokens a new request feeds per decoding step (model/batcher.py).
        mixed: how requests of different budgets share a decoding step: "widest" (one forward sliced to
            the widest active budget, rows masked to theirs) or "group" (one sliced forward per budget)
            (model/batcher.py; widest measured 1.3-2.3x faster on mixed traffic, equal on one budget).
    """

    def __init__(
        self,
        path: str | Path,
        dtype: torch.dtype | str | None = None,
        name: str | None = None,
        device: torch.device | str = "cpu",
        max_context: int | None = None,
        kv_cache: str = "padded",
        prefill_chunk: int = 256,
        mixed: str = "widest",
    ) -> None:
        self.path = Path(path)
        self.tokenizer = load_tokenizer(self.path)
        if self.tokenizer is None:
            raise ValueError(f"{self.path}: the checkpoint has no tokenizer; serving needs one")
        ContinuousBatcher.check_options(kv_cache, prefill_chunk, mixed)  # bad options fail here, in one line
        # the decoding thread loads the model itself (decode_loop.py says why)
        self.loop = DecodeLoop(
            lambda: _load(self.path, dtype, device),
            lambda model: ContinuousBatcher(model, kv_cache, prefill_chunk, mixed),
        )
        self.model = self.loop.model()
        self.config = self.model.config
        self.device = torch.device(device)
        self.dtype = next(self.model.parameters()).dtype
        self.max_context = max_context or self.config.max_position_embeddings
        self.table = ModelTable(self.path, self.config, name)
        self.name, self.models = self.table.name, self.table.models
        # One lock around every tokenizer call: transformers' fast tokenizers reconfigure state on the shared
        # Rust object per call, which can fail with "Already borrowed" under concurrent threads
        # (huggingface/tokenizers#537, transformers#47085). Calls are short next to a decoding step.
        self._tokenizer_lock = threading.Lock()
        ids = (self.tokenizer.eos_token_id, self.config.eos_token_id)
        self.eos_token_ids = frozenset(int(i) for i in ids if i is not None)

    def resolve(self, model: str | float | SubnetSpec | ServedModel | None = None) -> ServedModel:
        """The served model for a name, a budget or a spec (see `ModelTable.resolve`); None: the parent.

        Raises:
            UnknownModelError: the model is not served.
        """
        return self.table.resolve(model)

    # --- prompts -----------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Text -> token ids; an empty prompt starts from BOS when the tokenizer has one."""
        with self._tokenizer_lock:
            ids = list(
                self.tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)["input_ids"]
            )
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [int(self.tokenizer.bos_token_id)]
        return ids

    def chat_prompt(self, messages: list[dict[str, str]]) -> tuple[list[int], tuple[str, ...]]:
        """Chat messages -> (prompt ids, extra stop strings), via the tokenizer's chat template if any."""
        with self._tokenizer_lock:
            text, stops, templated = chat_prompt_text(self.tokenizer, messages)
        return self.encode(text, add_special_tokens=not templated), stops

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Token ids -> text (thread-safe)."""
        with self._tokenizer_lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def check_lengths(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Raises ContextLengthError when the request cannot fit the context limit (vLLM's wording)."""
        if prompt_tokens + max_new_tokens > self.max_context:
            raise ContextLengthError(
                f"This model's maximum context length is {self.max_context} tokens. However, you requested "
                f"{prompt_tokens + max_new_tokens} tokens ({prompt_tokens} in the prompt, {max_new_tokens} "
                "for the completion). Please reduce the prompt or the completion length."
            )

    # --- generation --------------------------------------------------------------------------------------
    def start(
        self,
        prompt_ids: Sequence[int],
        model: str | float | SubnetSpec | ServedModel | None,
        params: SamplingParams,
        sink: Any,
        cancel: threading.Event | None = None,
    ) -> RequestStream:
        """Queue a request in the running batch; its StreamEvents go to `sink.put` from the decoding thread
        (the last one has finish_reason and stats; an exception that ends it goes there too). Returns its
        RequestStream (`finished` is set after the last event, `close()` drops the row)."""
        served = self.resolve(model)
        if not prompt_ids:
            raise ValueError("prompt: empty (and the tokenizer has no BOS token to start from)")
        self.check_lengths(len(prompt_ids), params.max_new_tokens)
        stops = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
        request = SequenceRequest(
            [int(t) for t in prompt_ids], params.max_new_tokens, None if served.masks is None else served.spec,
            params.temperature, params.top_k, params.top_p, params.seed, stops,
        )
        stats = GenerationStats(served.name, served.budget, len(prompt_ids))
        stream = RequestStream(self, served, params, stats, stops, sink, cancel)
        self.loop.submit(request, cancel, events=stream, row_cancel=stream.cancel)
        return stream

    def stream(
        self,
        prompt_ids: Sequence[int],
        model: str | float | SubnetSpec | ServedModel | None = None,
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamEvent]:
        """Generate, yielding a StreamEvent per token; the last one has finish_reason and stats.

        The request joins the running batch (one decoding loop for every request: `decode_loop.py`).

        Args:
            prompt_ids: the prompt's token ids (non-empty).
            model: a served name, a budget or a SubnetSpec (see `resolve`); None is the parent.
            params: sampling parameters.
            cancel: set it (from any thread) to stop after the current step (finish_reason "cancelled").
        """
        events: queue.Queue = queue.Queue()
        stream = self.start(prompt_ids, model, params or SamplingParams(), events, cancel)
        try:
            while True:
                event = events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            stream.close()  # a consumer that stops early frees the row at the next step

    def generate(
        self,
        prompt_ids: Sequence[int],
        model: str | float | SubnetSpec | ServedModel | None = None,
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
        **overrides: Any,
    ) -> Completion:
        """`stream` collected: the whole completion. Keyword overrides set SamplingParams fields
        (`engine.generate(ids, "m-0.5", max_new_tokens=32, temperature=0.7, seed=1)`)."""
        params = SamplingParams(**{**(params.__dict__ if params else {}), **overrides})
        pieces, ids = [], []
        for event in self.stream(prompt_ids, model, params, cancel):
            pieces.append(event.text)
            ids.extend(event.token_ids)
            last = event
        return Completion("".join(pieces), ids, last.finish_reason or "length", last.stats)

    def close(self) -> None:
        """Stop the decoding thread (requests in flight end "cancelled")."""
        self.loop.close()

    # --- memory ------------------------------------------------------------------------------------------
    def memory_report(self) -> dict[str, Any]:
        """Weights (held once), what separate sliced copies of the listed budgets would take, the caches of
        the requests in flight (KV padding / free pages included), the process RSS, and each model's predicted
        cache cost (fixed state + KV bytes per token)."""
        live = self.loop.snapshot
        per_model, distinct = {}, {}
        for name, served in self.models.items():
            sliced = predicted_memory(served.spec, 0, self.dtype)["weights"]
            per_model[name] = {
                "budget": served.budget,
                "params": served.spec.param_count(),
                "sliced_weight_bytes": sliced,
                **cache_profile(served.spec, self.dtype),
            }
            distinct[served.spec] = sliced  # NAME and NAME-1.0 are usually one spec: one separate copy
        return {
            "dtype": str(self.dtype).removeprefix("torch."),
            "weight_bytes": weight_bytes(self.model),
            "separate_weight_bytes": sum(distinct.values()),
            "active_requests": live["active"],
            "active_cache_bytes": live["cache_bytes"],
            "rss_bytes": process_rss_bytes(),
            "models": per_model,
        }
