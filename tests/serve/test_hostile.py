# SPDX-License-Identifier: Apache-2.0
"""Hostile input (issue 18): lone surrogates, deeply nested bodies, other HTTP methods, loose model names,
the interpolated-budget cache, a corrupt budgets.json, and requests still queued at shutdown. Each gets a
4xx / 503 OpenAI error object (or a one-line error naming the file), never a 500 or a bare stream."""

import json
import shutil
import socket
import threading
import time

import pytest
from serve_testlib import get, post, request, stream

from nemotron_elastic.commands.serve import main
from nemotron_elastic.serve.handlers import failure
from nemotron_elastic.serve.model_table import MAX_INTERPOLATED, ModelTable, UnknownModelError
from nemotron_elastic.serve.scheduler import ShuttingDownError, WorkerPool
from nemotron_elastic.serve.server import ElasticServer

OK = {"model": "micro-0.5", "prompt": "The quick", "max_tokens": 2, "temperature": 0}
CHAT = {"model": "micro-0.5", "max_tokens": 2, "temperature": 0}


def assert_error(status, body, expected_status, param=None):
    assert status == expected_status, body
    assert set(body) == {"error"} and body["error"]["message"], body
    if param is not None:
        assert body["error"]["param"] == param, body


def raw_json(obj) -> bytes:
    """`obj` as JSON, where the text 'LONE' becomes the escape of a lone surrogate (valid JSON syntax) and
    'PAIR' that of a surrogate pair (one character, U+1F600)."""
    return json.dumps(obj).replace("LONE", "\\ud800").replace("PAIR", "\\ud83d\\ude00").encode()


# --- lone surrogates ---------------------------------------------------------------------------------------
SURROGATES = {
    "completion prompt": ("/v1/completions", {**OK, "prompt": "aLONEb"}, "prompt"),
    "prompt in an array": ("/v1/completions", {**OK, "prompt": ["aLONEb"]}, "prompt"),
    "stop string": ("/v1/completions", {**OK, "stop": "aLONE"}, "stop"),
    "stop array": ("/v1/completions", {**OK, "stop": ["x", "LONE"]}, "stop"),
    "chat content": (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": "aLONEb"}]},
        "messages[0].content",
    ),
    "chat text part": (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "LONE"}]}]},
        "messages[0].content[0]",
    ),
    "chat stop": (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": "hi"}], "stop": ["LONE"]},
        "stop",
    ),
}


@pytest.mark.parametrize("case", list(SURROGATES))
def test_a_lone_surrogate_is_a_400(server, case):
    path, body, param = SURROGATES[case]
    assert_error(*post(server.url, path, None, raw=raw_json(body)), 400, param)
    assert_error(*post(server.url, path, None, raw=raw_json({**body, "stream": True})), 400, param)


def test_a_surrogate_pair_is_one_character_and_served(server):
    body = {**OK, "prompt": "aPAIR", "echo": True}
    status, body = post(server.url, "/v1/completions", None, raw=raw_json(body))
    assert status == 200, body
    assert body["choices"][0]["text"].startswith("a\U0001f600"), body


# --- nesting -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("shape", ["array", "object"])
def test_a_body_nested_100000_deep_is_a_400(server, path, shape):
    depth = 100_000
    raw = b"[" * depth + b"]" * depth if shape == "array" else b'{"a":' * depth + b"1" + b"}" * depth
    assert_error(*post(server.url, path, None, raw=raw), 400)
    status, body = post(server.url, "/v1/completions", OK)
    assert status == 200, body


# --- other methods -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "PUT", "DELETE"])
def test_other_methods_get_a_json_405_or_404(server, method):
    for path, allow in [("/v1/completions", "POST"), ("/health", "GET"), ("/v1/models/micro", "GET")]:
        status, body = request(server.url, method, path)
        assert_error(status, body, 405)
        assert body["error"]["code"] == "method_not_allowed"
    assert_error(*request(server.url, method, "/nothing"), 404)


def raw_exchange(server, head: bytes) -> bytes:
    """Send a request head on a fresh socket (the request asks to close) and read the answer to its end."""
    with socket.create_connection(server.httpd.server_address[:2], timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data


@pytest.mark.parametrize(
    ("path", "status", "allow"), [("/v1/completions", 405, "POST"), ("/v1/x", 404, None)]
)
def test_head_gets_the_status_and_headers_without_a_body(server, path, status, allow):
    data = raw_exchange(server, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status}") and body == b""
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/json" and int(headers["Content-Length"]) > 0
    assert headers.get("Allow") == allow


def test_an_unknown_method_or_a_broken_request_line_is_a_json_error(server):
    unknown_method = b"BREW /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n"
    for head, status in [(unknown_method, 501), (b"GET /a b HTTP/1.1\r\n\r\n", 400)]:
        data = raw_exchange(server, head)
        head_part, _, body = data.partition(b"\r\n\r\n")
        assert head_part.startswith(f"HTTP/1.1 {status}".encode()), data
        assert_error(status, json.loads(body), status)


# --- model names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["micro- 0.6", "micro-0.6 ", "micro-0_1", "micro-0_6", "micro-6e-1", "micro-+0.6", "micro-.6", "micro-0.",
     "micro-nan", "micro-inf", "micro-\u0660.\u0666", "micro-0x1"],
)  # fmt: skip
def test_model_names_are_parsed_strictly(server, engine, name):
    with pytest.raises(UnknownModelError):
        engine.table.resolve(name)
    status, body = post(server.url, "/v1/completions", {**OK, "model": name})
    assert_error(status, body, 404, "model")
    assert body["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(("name", "budget"), [("micro-0.6", 0.6), ("micro-1", 1.0), ("micro-0.50", 0.5)])
def test_plain_decimal_budgets_resolve(engine, name, budget):
    assert engine.table.resolve(name).budget == pytest.approx(budget)


def test_the_interpolated_budget_cache_is_bounded(elastic_dir, engine):
    assert MAX_INTERPOLATED == 64
    table = ModelTable(elastic_dir, engine.config, max_interpolated=3)
    names = [f"{table.name}-0.6{i}" for i in range(5)]
    first = table.resolve(names[0])
    for name in names[1:]:
        table.resolve(name)
    assert list(table._interpolated) == names[2:]  # least recently used first out
    table.resolve(names[2])  # a hit makes it the most recent
    table.resolve(names[0])  # rebuilt: it had been dropped
    assert list(table._interpolated) == [names[4], names[2], names[0]]
    assert table.resolve(names[0]) is not first and table.resolve(names[0]).budget == pytest.approx(0.6)


# --- budgets.json ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ['{"budgets": [', '{"x": 1}', '{"budgets": [{"budget": 0.5}]}', "[]"])
def test_a_corrupt_budgets_json_is_a_one_line_error_naming_it(elastic_dir, tmp_path, capsys, content):
    model = tmp_path / "model"
    shutil.copytree(elastic_dir, model)
    (model / "budgets.json").write_text(content)
    assert main(["--model", str(model), "--port", "0", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(model / "budgets.json") in err, err


# --- shutdown with queued requests -------------------------------------------------------------------------
def test_shutdown_ends_waiting_jobs_at_once_and_gives_running_ones_their_grace():
    pool = WorkerPool(1, 4)
    release = threading.Event()
    running = pool.submit(lambda job: release.wait(30))
    assert running.started.wait(10)
    waiting = [pool.submit(lambda job: None) for _ in range(2)]
    stopper = threading.Thread(target=pool.shutdown, kwargs={"grace": 30.0})
    stopper.start()
    try:
        for job in waiting:
            assert job.done.wait(10) and not job.started.is_set()
            assert isinstance(job.error, ShuttingDownError) and job.events.get(timeout=1) is None
        assert not running.done.is_set()  # still within its grace period
        assert pool.stats()["waiting"] == 0 and pool.stats()["cancelled"] == 2
    finally:
        release.set()
        stopper.join(30)
    assert running.done.is_set() and running.error is None and pool.stats()["completed"] == 1


def test_queued_requests_get_503_at_shutdown(engine):
    srv = ElasticServer(engine, port=0, max_concurrency=1, max_queue=4, quiet=True).start()
    url, results = srv.url, {}
    long = {**OK, "max_tokens": 3000, "ignore_eos": True}
    chat = {**CHAT, "messages": [{"role": "user", "content": "hi"}]}
    calls = {
        "running": lambda: stream(url, "/v1/completions", long),
        "whole": lambda: post(url, "/v1/completions", OK),
        "stream": lambda: stream(url, "/v1/completions", OK),
        "chat stream": lambda: stream(url, "/v1/chat/completions", chat),
    }
    threads = []
    for key, call in calls.items():  # the long stream first: it takes the one worker, the rest wait
        threads.append(threading.Thread(target=lambda key=key, call=call: results.update({key: call()})))
        threads[-1].start()
        want = {"running": 1, "waiting": len(threads) - 1}
        deadline = time.monotonic() + 30
        while {k: get(url, "/health")[1]["queue"][k] for k in want} != want:
            assert time.monotonic() < deadline, get(url, "/health")[1]["queue"]
            time.sleep(0.02)
    srv.shutdown(grace=0.0)
    for thread in threads:
        thread.join(30)
    status, events = results["running"]
    assert status == 200 and events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "cancelled"
    for key in ("whole", "stream", "chat stream"):
        status, body = results[key]
        body = body[0] if isinstance(body, list) else body
        assert_error(status, body, 503)
        assert body["error"]["type"] == "server_error"


def test_a_job_without_an_answer_is_a_server_error():
    assert failure(ShuttingDownError("closing")).status == 503
    assert failure(None).status == 500 and "finish_reason" in failure(None).message
    assert failure(RuntimeError("boom")).body()["error"]["type"] == "server_error"
