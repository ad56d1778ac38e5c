# SPDX-License-Identifier: Apache-2.0
"""OpenAI response objects: completions, chat completions, their streamed chunks, model cards.

Shapes follow the OpenAI API reference. Each answer also carries an `elastic` object (ignored by OpenAI
clients) with the budget that served it and the request's decoding-cache bytes, measured from the cache
tensors and predicted by the cost model:

    "elastic": {"budget": 0.5, "cache_bytes": 123456, "predicted_cache_bytes": 123456,
                "generation_seconds": 0.84, "first_token_seconds": 0.05}

(the seconds are the engine's, from the start of generation: time spent waiting for a worker is not in
them).

Streams send it in the chunk that carries the finish_reason.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .engine import GenerationStats
from .model_table import ServedModel


@dataclass
class ResponseIds:
    """The id, creation time and model name shared by every chunk of one answer."""

    kind: str  # "completion" | "chat"
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            self.id = ("cmpl-" if self.kind == "completion" else "chatcmpl-") + uuid.uuid4().hex[:24]

    def head(self, obj: str) -> dict[str, Any]:
        """The fields every object of this answer starts with."""
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def usage(stats: GenerationStats) -> dict[str, int]:
    """OpenAI's usage object (completion tokens include a final EOS / stop id)."""
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def elastic_info(stats: GenerationStats) -> dict[str, Any]:
    """The `elastic` extension object: budget, cache bytes (measured, predicted), engine seconds."""
    return {
        "budget": stats.budget,
        "cache_bytes": stats.cache_bytes,
        "predicted_cache_bytes": stats.predicted_cache_bytes,
        "generation_seconds": round(stats.seconds, 6),
        "first_token_seconds": None
        if stats.first_token_seconds is None
        else round(stats.first_token_seconds, 6),
    }


def completion(ids: ResponseIds, text: str, finish_reason: str, stats: GenerationStats) -> dict[str, Any]:
    """A whole /v1/completions answer."""
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {
        **ids.head("text_completion"),
        "choices": [choice],
        "usage": usage(stats),
        "elastic": elastic_info(stats),
    }


def chat_completion(
    ids: ResponseIds, text: str, finish_reason: str, stats: GenerationStats
) -> dict[str, Any]:
    """A whole /v1/chat/completions answer."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    return {
        **ids.head("chat.completion"),
        "choices": [choice],
        "usage": usage(stats),
        "elastic": elastic_info(stats),
    }


def chunk(
    ids: ResponseIds,
    text: str | None,
    finish_reason: str | None = None,
    stats: GenerationStats | None = None,
    first: bool = False,
) -> dict[str, Any]:
    """One streamed chunk (completion or chat). The chat stream's first chunk announces the role."""
    if ids.kind == "completion":
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        out = {**ids.head("text_completion"), "choices": [choice]}
    else:
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        out = {**ids.head("chat.completion.chunk"), "choices": [choice]}
    if stats is not None:
        out["elastic"] = elastic_info(stats)
    return out


def usage_chunk(ids: ResponseIds, stats: GenerationStats) -> dict[str, Any]:
    """The extra last chunk of `stream_options: {"include_usage": true}`: no choices, the usage."""
    obj = "text_completion" if ids.kind == "completion" else "chat.completion.chunk"
    return {**ids.head(obj), "choices": [], "usage": usage(stats)}


def model_card(served: ServedModel, created: int, root: str) -> dict[str, Any]:
    """One entry of GET /v1/models; `budget`, `params` and `spec` extend OpenAI's fields."""
    return {
        "id": served.name,
        "object": "model",
        "created": created,
        "owned_by": "nemotron-elastic",
        "root": root,
        "parent": None if served.name == root else root,
        **served.describe(),
    }
