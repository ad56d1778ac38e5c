# SPDX-License-Identifier: Apache-2.0
"""Bad requests get a 4xx OpenAI error object and the server keeps serving; a client that disconnects
mid-stream is cancelled and its worker freed; a full queue answers 429."""

import json
import socket
import time

import pytest
from serve_testlib import get, post, request

from nemotron_elastic.serve.server import ElasticServer

OK = {"model": "micro-0.5", "prompt": "The quick", "max_tokens": 4, "temperature": 0}

BAD_BODIES = {
    "body not an object": ([OK], 400, None),
    "missing model": ({"prompt": "x"}, 400, "model"),
    "unknown model": ({**OK, "model": "gpt-4"}, 404, "model"),
    "unknown budget": ({**OK, "model": "micro-0.1"}, 404, "model"),
    "negative max_tokens": ({**OK, "max_tokens": -5}, 400, "max_tokens"),
    "zero max_tokens": ({**OK, "max_tokens": 0}, 400, "max_tokens"),
    "huge max_tokens": ({**OK, "max_tokens": 10**12}, 400, "prompt"),
    "fractional max_tokens": ({**OK, "max_tokens": 1.5}, 400, "max_tokens"),
    "bool max_tokens": ({**OK, "max_tokens": True}, 400, "max_tokens"),
    "string temperature": ({**OK, "temperature": "hot"}, 400, "temperature"),
    "temperature out of range": ({**OK, "temperature": 3}, 400, "temperature"),
    "top_p zero": ({**OK, "top_p": 0}, 400, "top_p"),
    "string stream": ({**OK, "stream": "yes"}, 400, "stream"),
    "prompt of wrong type": ({**OK, "prompt": 5}, 400, "prompt"),
    "two prompts": ({**OK, "prompt": ["a", "b"]}, 400, "prompt"),
    "token id outside vocab": ({**OK, "prompt": [1, 10**6]}, 400, "prompt"),
    "stop of wrong type": ({**OK, "stop": 3}, 400, "stop"),
    "n > 1": ({**OK, "n": 2}, 400, "n"),
    "penalty": ({**OK, "presence_penalty": 0.5}, 400, "presence_penalty"),
    "stream_options without stream": (
        {**OK, "stream_options": {"include_usage": True}},
        400,
        "stream_options",
    ),
    "over-long prompt": ({**OK, "prompt": [5] * 5000}, 400, "prompt"),
    "over-long text prompt": ({**OK, "prompt": "the fox " * 3000}, 400, "prompt"),
}

BAD_CHAT = {
    "messages not a list": ({"model": "micro", "messages": "hi"}, 400, "messages"),
    "empty messages": ({"model": "micro", "messages": []}, 400, "messages"),
    "bad role": ({"model": "micro", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
    "content of wrong type": (
        {"model": "micro", "messages": [{"role": "user", "content": 7}]},
        400,
        "messages[0].content",
    ),
    "image part": (
        {"model": "micro", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "messages[0].content[0]",
    ),
    "tools": (
        {"model": "micro", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
        400,
        "tools",
    ),
}


def assert_error(status, body, expected_status, param=None):
    assert status == expected_status, body
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["type"] in ("invalid_request_error", "rate_limit_error", "server_error")
    if param is not None:
        assert body["error"]["param"] == param


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_completion_requests(server, case):
    body, status, param = BAD_BODIES[case]
    assert_error(*post(server.url, "/v1/completions", body), status, param)


@pytest.mark.parametrize("case", list(BAD_CHAT))
def test_bad_chat_requests(server, case):
    body, status, param = BAD_CHAT[case]
    assert_error(*post(server.url, "/v1/chat/completions", body), status, param)


def test_protocol_errors_and_the_server_keeps_serving(server):
    assert_error(*post(server.url, "/v1/completions", None, raw=b"{not json"), 400)
    assert_error(*post(server.url, "/v1/completions", None, raw=b"\xff\xfe"), 400)
    assert_error(*request(server.url, "GET", "/v1/completions"), 405)
    assert_error(*get(server.url, "/v1/nothing"), 404)
    # no Content-Length: refused before reading a body
    with socket.create_connection(server.httpd.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
        head = sock.recv(4096).decode()
    assert head.startswith("HTTP/1.1 411")
    status, body = post(server.url, "/v1/completions", OK)
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def open_stream(server, body):
    """Send a streaming request on a raw socket; return it after the first SSE event arrived."""
    sock = socket.create_connection(server.httpd.server_address[:2], timeout=30)
    data = json.dumps({**body, "stream": True}).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
    )
    received = b""
    while b"data: " not in received:
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200")
    return sock


def test_client_disconnect_mid_stream_cancels_and_frees_the_slot(server):
    before = get(server.url, "/health")[1]["queue"]
    long = {**OK, "max_tokens": 3000, "ignore_eos": True, "prompt": "x"}
    sock = open_stream(server, long)
    assert wait_until(lambda: get(server.url, "/health")[1]["queue"]["running"] >= 1)
    sock.close()
    assert wait_until(lambda: get(server.url, "/health")[1]["queue"]["cancelled"] == before["cancelled"] + 1)
    queue = get(server.url, "/health")[1]["queue"]
    assert queue["running"] == 0 and queue["failed"] == before["failed"]
    assert get(server.url, "/health")[1]["memory"]["active_requests"] == 0
    status, body = post(server.url, "/v1/completions", OK)
    assert status == 200, body


def test_client_disconnect_while_waiting_for_a_whole_answer_cancels(server):
    before = get(server.url, "/health")[1]["queue"]
    sock = socket.create_connection(server.httpd.server_address[:2], timeout=30)
    data = json.dumps({**OK, "max_tokens": 3000, "ignore_eos": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)  # fmt: skip
    assert wait_until(lambda: get(server.url, "/health")[1]["queue"]["running"] >= 1)
    sock.close()
    assert wait_until(lambda: get(server.url, "/health")[1]["queue"]["cancelled"] == before["cancelled"] + 1)
    assert get(server.url, "/health")[1]["queue"]["running"] == 0


def test_full_queue_answers_429_and_recovers(engine):
    srv = ElasticServer(engine, port=0, max_concurrency=1, max_queue=0, quiet=True).start()
    try:
        sock = open_stream(srv, {**OK, "max_tokens": 3000, "ignore_eos": True})
        assert_error(*post(srv.url, "/v1/completions", OK), 429)
        assert get(srv.url, "/health")[1]["queue"]["rejected"] == 1
        sock.close()
        assert wait_until(lambda: get(srv.url, "/health")[1]["queue"]["running"] == 0)
        status, body = post(srv.url, "/v1/completions", OK)
        assert status == 200, body
    finally:
        srv.shutdown(grace=0.5)
