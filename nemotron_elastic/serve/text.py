# SPDX-License-Identifier: Apache-2.0
"""Text in and out of the engine: chat prompts, incremental detokenization and stop strings.

`chat_prompt_text` turns chat messages into prompt text (the tokenizer's chat template, or a plain
transcript; see its section below).

`IncrementalDetokenizer` turns a growing list of token ids into text deltas whose concatenation equals
`tokenizer.decode(all_ids, skip_special_tokens=True)`. Two things make the naive "decode the new token"
wrong: a multi-byte character split over several byte-level BPE tokens (the partial decode ends in the
replacement character U+FFFD), and SentencePiece-style decoders that strip the leading space of the
first token of a decode call. So, as vLLM and TGI do, each step decodes a short window that starts a few
tokens back (`prefix`) and emits what the window adds beyond the already emitted part (`read`); a window
ending in U+FFFD is held back until the character completes.

`StopMatcher` cuts the text before the first stop string to complete (OpenAI `stop`: the stop string is
not returned) and holds back a tail that could still become a stop string, so a streamed client never sees
text that the non-streamed answer would not contain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

REPLACEMENT = "\ufffd"  # what a decoder emits for an incomplete UTF-8 sequence


class IncrementalDetokenizer:
    """Text deltas of a growing token sequence.

    Args:
        decode: token ids -> text, e.g. `lambda ids: tokenizer.decode(ids, skip_special_tokens=True)`
            (special tokens dropped, as the OpenAI APIs do).
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode_fn = decode
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window (a few tokens before `read`)
        self.read = 0  # tokens whose text is already emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return self._decode_fn(list(ids))

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ("" while a character is still incomplete)."""
        self.ids.append(int(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        """The held-back text at the end of generation (an incomplete character decodes as U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self.read >= len(self.ids):
            return ""
        prefix_text = self._decode(self.ids[self.prefix : self.read])
        new_text = self._decode(self.ids[self.prefix :])
        if not final and (len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT)):
            return ""  # nothing printable yet, or a character split over tokens: wait for the next token
        self.prefix, self.read = self.read, len(self.ids)
        return new_text[len(prefix_text) :]


class StopMatcher:
    """Applies OpenAI `stop` strings to a text stream.

    `feed(delta)` returns (text safe to emit, stopped). Once a stop string is found the text before it is
    returned and the matcher reports stopped; text after the stop string is dropped.

    Args:
        stops: the stop strings (empty strings are ignored).
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""  # a tail of the text that is a prefix of some stop string
        self.stopped = False

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add text; return (what can be emitted now, whether a stop string was reached)."""
        if self.stopped:
            return "", True
        if not self.stops:
            return delta, False
        text = self.held + delta
        # The stop string that *ends* first is the one generation reaches first, had the text come one
        # character at a time; cutting there makes the answer independent of how tokens split the text.
        found = [(i + len(s), i) for s in self.stops if (i := text.find(s)) >= 0]
        if found:
            self.held, self.stopped = "", True
            return text[: min(found)[1]], True
        keep = self._partial_tail(text)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """At the end of generation the held tail is ordinary text (no stop string completed)."""
        out, self.held = self.held, ""
        return "" if self.stopped else out

    def _partial_tail(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best


# --- chat prompts ----------------------------------------------------------------------------------------
# Chat messages -> prompt text: the tokenizer's chat template, or a plain transcript when it has none.
#
# With a template (SmolLM2-Instruct, Nemotron) the text is `tokenizer.apply_chat_template(messages,
# add_generation_prompt=True)` and is encoded without adding special tokens again (the template writes
# them). Tokenizers trained here (`data/tokenizer.train_bpe`) have no template; they get a transcript
#
#     System: <system text>
#
#     User: <text>
#     Assistant: <text>
#     User: <text>
#     Assistant:
#
# and the stop string "\nUser:", so that a base model continuing the transcript stops where the next user
# turn would begin instead of writing it.
FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
FALLBACK_STOPS = ("\nUser:",)


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, tuple[str, ...], bool]:
    """Render chat messages as one prompt.

    Args:
        tokenizer: a transformers tokenizer.
        messages: [{"role": "system" | "user" | "assistant", "content": str}, ...], already validated.

    Returns:
        (text, extra stop strings, whether a chat template was used).

    Raises:
        ValueError: the template rejected the messages (e.g. roles that do not alternate).
    """
    if has_chat_template(tokenizer):
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001  jinja2 TemplateError, raise_exception() in a template
            message = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(f"messages: the model's chat template rejected them ({message})") from None
        return str(text), (), True
    lines: list[str] = []
    for message in messages:
        role, content = FALLBACK_ROLES[message["role"]], message["content"]
        if message["role"] == "system":
            lines.append(f"{role}: {content}\n")  # a blank line after the system text
        else:
            lines.append(f"{role}: {content}")
    lines.append(f"{FALLBACK_ROLES['assistant']}:")
    return "\n".join(lines), FALLBACK_STOPS, False
