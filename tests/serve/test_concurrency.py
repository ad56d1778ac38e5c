# SPDX-License-Identifier: Apache-2.0
"""Concurrent requests of different budgets, streamed and not, each get their own (unmixed) answer, equal
to a direct engine call; a SIGTERM / SIGINT shuts the server down cleanly."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_testlib import get, post, stream, streamed_text

from nemotron_elastic.serve.server import ElasticServer

PROMPTS = ["The quick brown", "To be, or not", "A journey of", "Rivers flow", "said the old", "whether tis"]
MODELS = ["micro", "micro-0.75", "micro-0.5", "micro-0.6"]  # 0.6: a budget the router interpolates


def expected(engine, prompt, model, max_tokens):
    return engine.generate(engine.encode(prompt), model, max_new_tokens=max_tokens, temperature=0).text


def test_mixed_budgets_concurrently_return_their_own_answers(server, engine):
    # every budget streamed and not: i % 3 == 0 streams i = 0, 3, 6, 9, one of each model
    jobs = [(PROMPTS[i % len(PROMPTS)], MODELS[i % len(MODELS)], i % 3 == 0, 6 + i % 5) for i in range(12)]
    start = threading.Barrier(len(jobs))

    def call(job):
        prompt, model, streamed, max_tokens = job
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        start.wait()  # all at once: 2 run, the rest wait in the queue
        if streamed:
            status, events = stream(server.url, "/v1/completions", body)
            return status, events[0]["model"] if status == 200 else None, streamed_text(events, chat=False)
        status, out = post(server.url, "/v1/completions", body)
        return status, out.get("model"), out["choices"][0]["text"] if status == 200 else out

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(call, jobs))
    for (prompt, model, _, max_tokens), (status, served, text) in zip(jobs, results):
        assert status == 200, text
        assert served == model
        assert text == expected(engine, prompt, model, max_tokens), (prompt, model)
    assert get(server.url, "/health")[1]["queue"]["running"] == 0


def stream_in_thread(url, body):
    result = {}
    reader = threading.Thread(target=lambda: result.update(out=stream(url, "/v1/completions", body)))
    reader.start()
    while get(url, "/health")[1]["queue"]["running"] == 0 and reader.is_alive():
        time.sleep(0.02)
    return reader, result


@pytest.mark.parametrize("grace", [30.0, 0.0], ids=["drained", "cancelled"])
def test_shutdown_finishes_or_cancels_running_streams(engine, grace):
    srv = ElasticServer(engine, port=0, max_concurrency=1, max_queue=2, quiet=True).start()
    url, address = srv.url, srv.httpd.server_address[:2]
    max_tokens = 30 if grace else 3000
    reader, result = stream_in_thread(
        url,
        {
            "model": "micro-0.5",
            "prompt": "The",
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    srv.shutdown(grace=grace)
    reader.join(timeout=30)
    status, events = result["out"]
    assert status == 200 and events[-1] == "[DONE]"
    final = events[-2]["choices"][0]
    assert final["finish_reason"] == ("length" if grace else "cancelled")
    with pytest.raises(OSError):  # no longer listening
        socket.create_connection(address, timeout=2).close()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_cleanly(elastic_dir, sig):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "nemotron_elastic.serve",
        "--model",
        str(elastic_dir),
        "--port",
        "0",
        "--quiet",
        "--max-concurrency",
        "1",
        "--grace",
        "10",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://"), line + proc.stderr.read()
        url = line.split()[-1]
        body = {"model": "micro-0.5", "prompt": "The quick", "max_tokens": 40, "temperature": 0}
        reader, result = stream_in_thread(url, body)
        proc.send_signal(sig)  # mid-request: the running stream is finished within the grace period
        reader.join(timeout=60)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        status, events = result["out"]
        assert status == 200 and events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert "server stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
