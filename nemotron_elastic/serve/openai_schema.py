# SPDX-License-Identifier: Apache-2.0
"""OpenAI request validation: JSON bodies of /v1/completions and /v1/chat/completions -> GenerationRequest.

Every problem is an `APIError` carrying the HTTP status and OpenAI's error body
`{"error": {"message", "type", "param", "code"}}`: wrong types (a bool is not an int), out-of-range
values, unsupported features asked for (n > 1, logprobs, penalties, tools) are 400; limits that need the
model (context length, token ids in the vocabulary, unknown model) are checked by the server.

Fields follow the OpenAI API reference (https://platform.openai.com/docs/api-reference), with vLLM's
extensions `top_k`, `stop_token_ids` and `ignore_eos`. Unknown fields are ignored, as vLLM does, so
clients that send extra options keep working. Defaults as OpenAI: temperature 1, completions
max_tokens 16; chat max_tokens: the rest of the context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

MAX_STOP_STRINGS = 16
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# JSON may escape a lone UTF-16 surrogate ("\\ud800"), which json.loads keeps as a str that is not valid
# Unicode: tokenizers refuse it (TypeError) and it cannot be encoded as UTF-8, so text fields refuse it.
_SURROGATE = re.compile("[\ud800-\udfff]")


class APIError(Exception):
    """An error answered as JSON: `status` is the HTTP code, `body()` OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}  # extra response headers, e.g. `Allow` of a 405

    def body(self) -> dict[str, Any]:
        """The JSON error object OpenAI clients parse."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> APIError:
    """A 400 error about one request field."""
    return APIError(400, f"{param}: {message}", param=param)


@dataclass
class GenerationRequest:
    """A validated completion or chat request (`prompt` for completions, `messages` for chat)."""

    kind: Literal["completion", "chat"]
    model: str
    prompt: str | list[int] | None = None
    messages: list[dict[str, str]] | None = None
    max_tokens: int | None = None  # None: completions 16, chat the rest of the context
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    ignore_eos: bool = False


# --- typed field readers -----------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), "null" if value is None else type(value).__name__)


def _int(body: dict, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():  # JSON clients may send 16.0
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(key, f"expected an integer, got {_type_name(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise bad(key, f"{value} is out of range {bounds}")
    return value


def _number(body: dict, key: str, lo: float, hi: float, lo_open: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(key, f"expected a number, got {_type_name(value)}")
    if not (lo < value if lo_open else lo <= value) or value > hi:
        raise bad(key, f"{value} is out of range {'(' if lo_open else '['}{lo}, {hi}]")
    return float(value)


def _bool(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(key, f"expected a boolean, got {_type_name(value)}")
    return value


def _unsupported(body: dict, key: str, allowed: tuple[Any, ...], what: str) -> None:
    value = body.get(key)
    if value is not None and value not in allowed:
        raise bad(key, f"{what} is not supported by this server")


def _text(value: str, param: str) -> str:
    """`value`, refused (400) if it holds a lone surrogate, i.e. is not valid Unicode text."""
    found = _SURROGATE.search(value)
    if found:
        where = f"U+{ord(found.group()):04X} at index {found.start()}"
        raise bad(param, f"invalid Unicode text: a lone surrogate ({where})")
    return value


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise bad("stop", f"expected a string or an array of strings, got {_type_name(value)}")
    if len(values) > MAX_STOP_STRINGS:
        raise bad("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(values)}")
    return tuple(_text(v, "stop") for v in values if v)


def _token_ids(value: Any, param: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad(param, "expected an array of integer token ids")
    return list(value)


# --- requests ----------------------------------------------------------------------------------------------
def _common(body: Any, kind: Literal["completion", "chat"]) -> GenerationRequest:
    if not isinstance(body, dict):
        raise APIError(400, f"request body: expected a JSON object, got {_type_name(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad(
            "model", "required, a model id from GET /v1/models" if model is None else "expected a string"
        )
    if _int(body, "n", 1, None) not in (None, 1):
        raise bad("n", "only n = 1 is supported (send several requests)")
    _unsupported(body, "best_of", (1,), "best_of > 1")
    _unsupported(body, "presence_penalty", (0, 0.0), "a non-zero presence_penalty")
    _unsupported(body, "frequency_penalty", (0, 0.0), "a non-zero frequency_penalty")
    if body.get("logit_bias") not in (None, {}):
        raise bad("logit_bias", "logit_bias is not supported by this server")
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise bad(
            "stream_options",
            "allowed only with stream: true, as an object" if not stream else "expected an object",
        )
    top_k = _int(body, "top_k", -1, None)
    stop_ids = body.get("stop_token_ids")
    temperature = _number(body, "temperature", 0.0, 2.0)
    return GenerationRequest(
        kind=kind,
        model=model,
        temperature=1.0 if temperature is None else temperature,
        top_p=_number(body, "top_p", 0.0, 1.0, lo_open=True),
        top_k=top_k if top_k and top_k > 0 else None,  # -1 / 0: no top-k (vLLM's convention)
        stop=_stop(body),
        stop_token_ids=tuple(_token_ids(stop_ids, "stop_token_ids")) if stop_ids is not None else (),
        seed=_int(body, "seed", *SEED_RANGE),
        stream=stream,
        include_usage=_bool(options or {}, "include_usage"),
        ignore_eos=_bool(body, "ignore_eos"),
    )


def parse_completion_request(body: Any) -> GenerationRequest:
    """Validate a /v1/completions body. `prompt`: a string, token ids, or a one-element array of either."""
    req = _common(body, "completion")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        if len(prompt) != 1:
            raise bad("prompt", f"one prompt per request is supported, got {len(prompt)}")
        prompt = prompt[0]
    if isinstance(prompt, list):
        prompt = _token_ids(prompt, "prompt")
        if not prompt:
            raise bad("prompt", "empty array of token ids")
    elif not isinstance(prompt, str):
        raise bad("prompt", f"expected a string or an array of token ids, got {_type_name(prompt)}")
    else:
        _text(prompt, "prompt")
    req.prompt = prompt
    req.max_tokens = _int(body, "max_tokens", 1, None)
    req.echo = _bool(body, "echo")
    _unsupported(body, "logprobs", (0,), "logprobs")
    _unsupported(body, "suffix", ("",), "suffix")
    return req


def parse_chat_request(body: Any) -> GenerationRequest:
    """Validate a /v1/chat/completions body; `messages` are normalised to [{"role", "content": str}]."""
    req = _common(body, "chat")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "expected a non-empty array of messages")
    req.messages = [_message(m, i) for i, m in enumerate(messages)]
    req.max_tokens = _int(body, "max_completion_tokens", 1, None)
    if req.max_tokens is None:
        req.max_tokens = _int(body, "max_tokens", 1, None)
    _unsupported(body, "logprobs", (False,), "logprobs")
    for key in ("tools", "functions"):
        if body.get(key):
            raise bad(key, "tool / function calling is not supported by this server")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise bad("response_format", 'only {"type": "text"} is supported')
    return req


def _message(message: Any, i: int) -> dict[str, str]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise bad(where, f"expected an object, got {_type_name(message)}")
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise bad(f"{where}.role", f"{role!r} is not one of {', '.join(CHAT_ROLES)}")
    content = message.get("content")
    if content is None and role == "assistant":
        content = ""
    if isinstance(content, list):  # content parts: only text parts can be served by a text model
        texts = []
        for j, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise bad(f"{where}.content[{j}]", 'only {"type": "text", "text": ...} parts are supported')
            texts.append(_text(part["text"], f"{where}.content[{j}]"))
        content = "".join(texts)
    if not isinstance(content, str):
        raise bad(
            f"{where}.content", f"expected a string or an array of text parts, got {_type_name(content)}"
        )
    return {"role": CHAT_ROLES[role], "content": _text(content, f"{where}.content")}
