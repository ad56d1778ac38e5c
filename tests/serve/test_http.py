# SPDX-License-Identifier: Apache-2.0
"""The HTTP server: every endpoint, streaming (SSE), the chat fallback transcript, memory in /health."""

from serve_testlib import get, post, stream, streamed_text

from nemotron_elastic.serve.text import FALLBACK_STOPS, chat_prompt_text

GREEDY = {"temperature": 0, "max_tokens": 12}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The quick brown"}]


def test_models_endpoint(server):
    status, body = get(server.url, "/v1/models")
    assert status == 200 and body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert list(cards) == ["micro", "micro-1.0", "micro-0.75", "micro-0.5"]
    assert cards["micro-0.5"]["budget"] == 0.5 and cards["micro-0.5"]["object"] == "model"
    assert cards["micro-0.5"]["params"] < cards["micro-0.75"]["params"] < cards["micro"]["params"]
    status, card = get(server.url, "/v1/models/micro-0.75")
    assert status == 200 and card["id"] == "micro-0.75" and card["spec"]["hidden"] == 24
    status, err = get(server.url, "/v1/models/nope")
    assert status == 404 and err["error"]["code"] == "model_not_found"


def test_health_reports_weights_once_and_the_queue(server, engine):
    status, body = get(server.url, "/health")
    assert status == 200 and body["status"] == "ok"
    mem = body["memory"]
    assert mem["weight_bytes"] == sum(p.numel() * 4 for p in engine.model.parameters())
    assert mem["weight_bytes"] < mem["separate_weight_bytes"]
    assert mem["rss_bytes"] > mem["weight_bytes"]
    assert {"running", "waiting", "completed", "max_concurrency", "max_queue"} <= set(body["queue"])


def test_completion(server, engine):
    status, body = post(
        server.url, "/v1/completions", {"model": "micro-0.5", "prompt": "The quick", **GREEDY}
    )
    assert status == 200, body
    assert (
        body["object"] == "text_completion"
        and body["model"] == "micro-0.5"
        and body["id"].startswith("cmpl-")
    )
    choice = body["choices"][0]
    expected = engine.generate(engine.encode("The quick"), "micro-0.5", max_new_tokens=12, temperature=0)
    assert choice["text"] == expected.text and choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(engine.encode("The quick")),
        "completion_tokens": 12,
        "total_tokens": len(engine.encode("The quick")) + 12,
    }
    assert body["elastic"]["cache_bytes"] == body["elastic"]["predicted_cache_bytes"] > 0
    # token-id prompts and echo
    ids = engine.encode("The quick")
    status, same = post(
        server.url, "/v1/completions", {"model": "micro-0.5", "prompt": ids, "echo": True, **GREEDY}
    )
    assert status == 200 and same["choices"][0]["text"] == "The quick" + expected.text


def test_completion_stream(server):
    body = {"model": "micro-0.75", "prompt": "To be, or not", **GREEDY}
    _, whole = post(server.url, "/v1/completions", body)
    status, events = stream(
        server.url, "/v1/completions", {**body, "stream_options": {"include_usage": True}}
    )
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert streamed_text(events, chat=False) == whole["choices"][0]["text"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_chat_and_chat_stream(server, engine):
    body = {"model": "micro-0.5", "messages": MESSAGES, **GREEDY}
    status, whole = post(server.url, "/v1/chat/completions", body)
    assert status == 200, whole
    assert whole["object"] == "chat.completion" and whole["id"].startswith("chatcmpl-")
    message = whole["choices"][0]["message"]
    assert message["role"] == "assistant"
    text, stops, templated = chat_prompt_text(engine.tokenizer, MESSAGES)  # this BPE has no chat template
    assert not templated and stops == FALLBACK_STOPS and text.endswith("User: The quick brown\nAssistant:")
    expected = engine.generate(engine.encode(text), "micro-0.5", max_new_tokens=12, temperature=0, stop=stops)
    assert message["content"] == expected.text
    assert whole["usage"]["prompt_tokens"] == len(engine.encode(text))
    status, events = stream(server.url, "/v1/chat/completions", body)
    assert status == 200 and events[-1] == "[DONE]"
    assert (
        events[0]["object"] == "chat.completion.chunk"
        and events[0]["choices"][0]["delta"]["role"] == "assistant"
    )
    assert streamed_text(events, chat=True) == message["content"]
    assert events[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_chat_template_is_used_when_the_tokenizer_has_one(engine):
    import copy

    tok = copy.deepcopy(engine.tokenizer)
    tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    text, stops, templated = chat_prompt_text(tok, MESSAGES)
    assert templated and stops == ()
    assert text == "<system>Be brief.\n<user>The quick brown\n<assistant>"


def test_stop_strings_over_http(server):
    body = {"model": "micro", "prompt": "The quick", **GREEDY}
    _, whole = post(server.url, "/v1/completions", body)
    text = whole["choices"][0]["text"]
    stop = text[4:6]
    _, cut = post(server.url, "/v1/completions", {**body, "stop": [stop, "\x00never"]})
    assert (
        cut["choices"][0]["text"] == text[: text.find(stop)] and cut["choices"][0]["finish_reason"] == "stop"
    )
    _, events = stream(server.url, "/v1/completions", {**body, "stop": stop})
    assert streamed_text(events, chat=False) == cut["choices"][0]["text"]
