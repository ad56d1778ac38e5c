# SPDX-License-Identifier: Apache-2.0
"""Chat rows (`format: messages`): checked, rendered to text, and the assistant's share of their tokens.

A row's field is a list of turns {role, content[, reasoning]}. `check_turns` says what is wrong with a row
(an unknown role, a content that is not a string); keys whose value is None are dropped first (Arrow and
`datasets` rows carry every struct key, None where a turn has none).

`Renderer` renders a conversation with the tokenizer's chat template, or, for a tokenizer without one, as
a plain `transcript`, and returns the character spans of the assistant's output: what the model must
generate in that turn, its reasoning and content and the template's end-of-turn marker after them (not
the role header or generation prompt before them, nor the whitespace the template puts after the turn).
The spans come from the template itself, not from knowing its format: rendering turns[:i] with the
generation prompt gives where turn i's output starts, rendering turns[:i+1] where it ends, and both must be
prefixes of the whole rendering (a template without a generation prompt: the turn's output starts at its
text, the role header stays out). A template that is not prefix-stable (one that renders earlier turns
differently once later ones follow) falls back to finding the turns' texts in order (then the spans hold
the reasoning and content only); a template that hides an assistant's content is refused. `encode_masked`
tokenizes the rendered texts as `encode_batch` does and turns the spans into one byte per token
(1: the token overlaps an assistant span), from the character offsets of that same encoding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

ROLES = ("system", "user", "assistant", "tool")
Span = tuple[int, int]  # [start, end) character offsets in the rendered text


class RowProblem(ValueError):
    """A conversation the chat template refuses: a malformed row (skipped and counted, or refused)."""


def check_turns(value: Any, field: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(what is wrong with a row's `field` value or None, its turns without None-valued keys)."""
    if not isinstance(value, list) or not value:
        return f"no '{field}' list", []
    turns = []
    for turn in value:
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            role = turn.get("role") if isinstance(turn, dict) else turn
            return f"unknown role {role!r} (expected one of {', '.join(ROLES)})", []
        if not isinstance(turn.get("content"), str):
            return f"a {turn['role']} turn whose content is not a string", []
        turns.append({k: v for k, v in turn.items() if v is not None})
    return None, turns


def _reasoning(turn: dict[str, Any]) -> str:
    value = turn.get("reasoning")
    return value if isinstance(value, str) else ""


def transcript_spans(turns: list[dict[str, Any]]) -> tuple[str, list[Span]]:
    """The fallback rendering of a conversation and its assistant spans: "role: content" turns separated by
    blank lines (an assistant turn's `reasoning`, when present, comes first as "assistant (reasoning): ...");
    the spans cover the reasoning and the content, not the "role: " headers."""
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0
    for turn in turns:
        role = turn["role"]
        pieces = [(f"{role} (reasoning): ", _reasoning(turn))] if _reasoning(turn) else []
        for head, body in [*pieces, (f"{role}: ", turn["content"])]:
            pos += 2 if parts else 0  # the "\n\n" before this part
            parts.append(head + body)
            if role == "assistant":
                spans.append((pos + len(head), pos + len(head) + len(body)))
            pos += len(head) + len(body)
    return "\n\n".join(parts), spans


def transcript(turns: list[dict[str, Any]]) -> str:
    """The fallback rendering of a conversation (see `transcript_spans`)."""
    return transcript_spans(turns)[0]


def _prefix_spans(render: Callable[[int, bool], str], turns: list[dict[str, Any]], full: str,
                  prompted: bool) -> list[Span] | None:
    """The assistant spans from prefix renderings, or None when the template is not prefix-stable.
    `prompted`: the template has a generation prompt (else the role header is part of the turn, so a turn's
    output starts where its text does)."""
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        try:
            prompt, after = render(i, prompted), render(i + 1, False)
        except Exception:  # noqa: BLE001 - a template may refuse a prefix (e.g. one ending on an assistant)
            return None
        if not (full.startswith(prompt) and full.startswith(after) and len(prompt) <= len(after)):
            return None
        start = len(prompt)
        if not prompted:
            first = _reasoning(turn) or turn["content"]
            found = full.find(first, start, len(after)) if first else start
            if found < 0:
                return None
            start = found
        spans.append((start, max(start, len(after.rstrip()))))
    return spans


def _searched_spans(turns: list[dict[str, Any]], full: str) -> list[Span] | None:
    """The assistant spans found by looking for every turn's texts in order (reasoning and content only), or
    None when an assistant's content is not in the rendering."""
    spans, cursor = [], 0
    for turn in turns:
        start = None
        for text, needed in ((_reasoning(turn), False), (turn["content"], True)):
            found = full.find(text, cursor) if text else -1
            if found < 0:
                if needed and text and turn["role"] == "assistant":
                    return None
                continue
            start = found if start is None else start
            cursor = found + len(text)
        if turn["role"] == "assistant":
            spans.append((cursor, cursor) if start is None else (start, cursor))
    return spans


class Renderer:
    """Renders conversations of one source: `renderer(turns) -> (text, assistant spans)`.

    Args:
        tokenizer: the prepare tokenizer; without a chat template conversations become a `transcript`
            (with a warning).
        source: the source's name, for the messages.

    Raises (on call):
        RowProblem: the template refuses the conversation (a malformed row).
        ValueError: the assistant's output cannot be located in the rendering (one line naming the source).
    """

    def __init__(self, tokenizer: Any, source: str):
        self.tokenizer, self.source = tokenizer, source
        self.template = getattr(tokenizer, "chat_template", None) is not None
        self.prompted = False  # whether the template has a generation prompt (a probe renders with and without)
        if not self.template:
            warnings.warn(f"source {source}: the tokenizer has no chat template; conversations are rendered as a "
                          "plain transcript (data/chat.py `transcript`)", stacklevel=3)
            return
        probe = [{"role": "user", "content": "?"}]
        try:
            self.prompted = self._render(probe, True) != self._render(probe, False)
        except Exception:  # noqa: BLE001 - a template that refuses the probe: located by content
            self.prompted = False

    def _render(self, turns: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)

    def __call__(self, turns: list[dict[str, Any]]) -> tuple[str, list[Span]]:
        if not self.template:
            return transcript_spans(turns)
        try:
            full = self._render(turns, False)
        except Exception as e:  # noqa: BLE001 - jinja2 and the template's own raise_exception
            raise RowProblem(f"the chat template refuses it ({(str(e).splitlines() or [type(e).__name__])[0]})") from None
        if not any(t["role"] == "assistant" for t in turns):
            return full, []
        renders = {(len(turns), False): full}  # a conversation that ends on the assistant ends on `full`

        def render(n: int, prompt: bool) -> str:
            if (n, prompt) not in renders:
                renders[n, prompt] = self._render(turns[:n], prompt)
            return renders[n, prompt]

        spans = _prefix_spans(render, turns, full, self.prompted)
        spans = spans if spans is not None else _searched_spans(turns, full)
        if spans is None:
            raise ValueError(f"source {self.source}: cannot find the assistant's turns in the chat template's "
                             "rendering (the template is not prefix-stable and rewrites their content)")
        return full, spans


def token_mask(offsets: list[tuple[int, int]], spans: list[Span]) -> np.ndarray:
    """One byte per token: 1 where the token's characters overlap an assistant span.

    Args:
        offsets: (start, end) character offsets of each token in the rendered text (the fast tokenizer's).
        spans: the assistant spans.

    Returns:
        (tokens,) uint8.
    """
    mask = np.zeros(len(offsets), dtype=bool)
    if offsets and spans:
        bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        for start, end in spans:
            mask |= (bounds[:, 0] < end) & (bounds[:, 1] > start)
    return mask.astype(np.uint8)


def _encoding_mask(encoding: Any, spans: list[Span]) -> np.ndarray:
    """`token_mask` of one `tokenizers.Encoding` from a few lookups per span instead of every token's offsets
    (building those made masks cost a third of the tokenizer's time); tokens are in text order."""
    mask = np.zeros(len(encoding.ids), dtype=np.uint8)
    for start, end in spans:
        if end <= start:
            continue
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:  # characters that no token covers: the general rule
            return token_mask(encoding.offsets, spans)
        # a character split over several tokens (a byte-level BPE's multi-byte character) marks all of them
        while last + 1 < len(mask) and (following := encoding.token_to_chars(last + 1)) and following[0] < end:
            last += 1
        mask[first : last + 1] = 1
    return mask


def encode_masked(tokenizer: Any, items: list[tuple[str, list[Span]]]) -> list[tuple[list[int], np.ndarray]]:
    """(token ids, assistant mask) of each rendered conversation: the ids are `encode_batch`'s (no special
    tokens added), the mask comes from the same encoding's character offsets."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    encodings = backend.encode_batch([text for text, _ in items], add_special_tokens=False)
    return [(enc.ids, _encoding_mask(enc, spans)) for enc, (_, spans) in zip(encodings, items)]
