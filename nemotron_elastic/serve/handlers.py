# SPDX-License-Identifier: Apache-2.0
"""One generation request from validated JSON to answer: prompt ids, sampling parameters, the answer
(whole or as stream chunks). Independent of HTTP, so tests and benchmarks can use it directly.

`prepare_call(engine, kind, body)` does every check that needs the model (unknown model, token ids outside
the vocabulary, prompt + max_tokens beyond the context limit) before a worker is taken, so a bad request
never occupies a slot. `GenerationCall` then turns the engine's StreamEvents into OpenAI objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .engine import GenerationStats, ManyInOneEngine, SamplingParams, StreamEvent
from .model_table import ServedModel
from .openai_schema import APIError, GenerationRequest, bad, parse_chat_request, parse_completion_request
from .responses import ResponseIds, chat_completion, chunk, completion, usage_chunk

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


@dataclass
class GenerationCall:
    """A validated request bound to its served model, and the answer built from its events."""

    request: GenerationRequest
    served: ServedModel
    prompt_ids: list[int]
    params: SamplingParams
    ids: ResponseIds
    prompt_text: str = ""  # for `echo`
    pieces: list[str] = field(default_factory=list)
    finish_reason: str = "length"
    stats: GenerationStats | None = None

    @property
    def chat(self) -> bool:
        """True for /v1/chat/completions."""
        return self.request.kind == "chat"

    def add(self, event: StreamEvent) -> None:
        """Accumulate one engine event (non-streamed answers)."""
        self.pieces.append(event.text)
        if event.finish_reason is not None:
            self.finish_reason, self.stats = event.finish_reason, event.stats

    def text(self) -> str:
        """The answer so far (the echoed prompt first, when asked for)."""
        echo = self.prompt_text if self.request.echo else ""
        return echo + "".join(self.pieces)

    def whole(self) -> dict[str, Any]:
        """The complete JSON answer, once every event was added."""
        assert self.stats is not None, "the generation has not finished"
        build = chat_completion if self.chat else completion
        return build(self.ids, self.text(), self.finish_reason, self.stats)

    def first_chunks(self) -> list[dict[str, Any]]:
        """Chunks sent before any token: the chat role, or the echoed prompt."""
        if self.chat:
            return [chunk(self.ids, "", first=True)]
        return [chunk(self.ids, self.prompt_text)] if self.request.echo and self.prompt_text else []

    def chunks(self, event: StreamEvent) -> list[dict[str, Any]]:
        """The stream chunks of one engine event: its text, then (last event) finish_reason and usage."""
        out = [chunk(self.ids, event.text)] if event.text else []
        if event.finish_reason is not None:
            self.finish_reason, self.stats = event.finish_reason, event.stats
            out.append(chunk(self.ids, None if self.chat else "", event.finish_reason, event.stats))
            if self.request.include_usage and event.stats is not None:
                out.append(usage_chunk(self.ids, event.stats))
        return out


def _check_ids(ids: list[int], vocab: int, param: str) -> None:
    wrong = [i for i in ids if not 0 <= i < vocab]
    if wrong:
        raise bad(param, f"token id {wrong[0]} is outside the vocabulary [0, {vocab})")


def prepare_call(engine: ManyInOneEngine, kind: str, body: Any) -> GenerationCall:
    """Validate a completion (`kind="completion"`) or chat (`"chat"`) body against the engine.

    Raises:
        APIError: bad fields (400).
        UnknownModelError: the model is not served (the server answers 404).
        ContextLengthError: prompt + max_tokens exceed the context limit (400).
    """
    req = parse_completion_request(body) if kind == "completion" else parse_chat_request(body)
    served = engine.resolve(req.model)
    vocab = engine.config.vocab_size
    extra_stops: tuple[str, ...] = ()
    if req.kind == "chat":
        try:
            prompt_ids, extra_stops = engine.chat_prompt(req.messages or [])
        except ValueError as err:
            raise APIError(400, str(err), param="messages") from None
        prompt_text = ""
    elif isinstance(req.prompt, str):
        prompt_ids, prompt_text = engine.encode(req.prompt), req.prompt
    else:
        _check_ids(req.prompt or [], vocab, "prompt")
        prompt_ids = list(req.prompt or [])
        prompt_text = engine.decode(prompt_ids) if req.echo else ""
    if not prompt_ids:
        raise bad("prompt", "empty, and the tokenizer has no BOS token to start from")
    _check_ids(list(req.stop_token_ids), vocab, "stop_token_ids")
    max_tokens = req.max_tokens
    if max_tokens is None:  # OpenAI: 16 for completions; chat: whatever the context leaves
        max_tokens = (
            DEFAULT_COMPLETION_TOKENS if req.kind == "completion" else engine.max_context - len(prompt_ids)
        )
    engine.check_lengths(len(prompt_ids), max(1, max_tokens))
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        stop=req.stop + extra_stops,
        stop_token_ids=req.stop_token_ids,
        seed=req.seed,
        ignore_eos=req.ignore_eos,
    )
    return GenerationCall(req, served, prompt_ids, params, ResponseIds(req.kind, served.name), prompt_text)
