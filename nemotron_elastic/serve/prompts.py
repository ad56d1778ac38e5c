# SPDX-License-Identifier: Apache-2.0
"""Chat messages -> prompt text: the tokenizer's chat template, or a plain transcript when it has none.

With a template (SmolLM2-Instruct, Nemotron) the text is `tokenizer.apply_chat_template(messages,
add_generation_prompt=True)` and is encoded without adding special tokens again (the template writes
them). Tokenizers trained here (`data/tokenizer.train_bpe`) have no template; they get a transcript

    System: <system text>

    User: <text>
    Assistant: <text>
    User: <text>
    Assistant:

and the stop string "\\nUser:", so that a base model continuing the transcript stops where the next user
turn would begin instead of writing it.
"""

from __future__ import annotations

from typing import Any

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
