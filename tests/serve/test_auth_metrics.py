# SPDX-License-Identifier: Apache-2.0
"""`--api-key` (401 with an OpenAI-style error on /v1/ routes; /health and /metrics open) and `GET /metrics`
(Prometheus text: queue depth, running requests per budget, generated tokens, tokens/s, time to first token)."""

import argparse
import re

import pytest
from serve_testlib import get, post, request

from nemotron_elastic.commands.serve import API_KEY_ENV, _loopback, add_serve_arguments
from nemotron_elastic.serve.metrics import TTFT_BUCKETS, ServeMetrics
from nemotron_elastic.serve.server import ElasticServer

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z]+="[^"]*"\})? [0-9.e+-]+$|^[a-z_]+_bucket\{le="[^"]+"\} [0-9]+$')


@pytest.fixture(scope="module")
def locked(engine):
    srv = ElasticServer(engine, port=0, max_concurrency=1, max_queue=4, quiet=True, api_key="sekrit").start()
    yield srv
    srv.shutdown(grace=1.0)


def test_v1_routes_need_the_key_and_health_stays_open(locked):
    assert get(locked.url, "/health")[0] == 200
    assert get(locked.url, "/metrics")[0] == 200
    status, body = get(locked.url, "/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key" and "Missing" in body["error"]["message"]
    status, body = request(locked.url, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    status, body = post(locked.url, "/v1/completions", {"model": "micro", "prompt": "x", "max_tokens": 2})
    assert status == 401  # refused before the body is read or a worker is taken
    status, body = request(locked.url, "GET", "/v1/models", headers={"Authorization": "Bearer sekrit"})
    assert status == 200 and body["object"] == "list"
    status, body = post(locked.url, "/v1/completions", {"model": "micro-0.5", "prompt": "The", "max_tokens": 3,
                                                        "temperature": 0}, headers={"Authorization": "Bearer sekrit"})
    assert status == 200 and body["usage"]["completion_tokens"] == 3
    with pytest.raises(ValueError, match="--api-key: empty"):
        ElasticServer(locked.engine, port=0, api_key=" ")


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, (name, text)
    return float(match.group(1))


def test_metrics_count_what_was_served(server):
    before = get(server.url, "/metrics")[1]
    for _ in range(2):
        status, _ = post(server.url, "/v1/completions", {"model": "micro-0.75", "prompt": "The quick",
                                                         "max_tokens": 5, "temperature": 0})
        assert status == 200
    text = get(server.url, "/metrics")[1]
    assert all(SAMPLE.match(line) for line in text.splitlines() if not line.startswith("#")), text
    tokens = 'nemotron_elastic_generated_tokens_total{model="micro-0.75"}'
    assert metric(text, tokens) - (metric(before, tokens) if tokens in before else 0) == 10
    assert metric(text, 'nemotron_elastic_running{model="micro-0.75"}') == 0
    assert metric(text, "nemotron_elastic_queue_waiting") == 0
    assert metric(text, 'nemotron_elastic_requests_total{outcome="completed"}') >= 2
    count = metric(text, "nemotron_elastic_time_to_first_token_seconds_count")
    assert count >= 2 and metric(text, 'nemotron_elastic_time_to_first_token_seconds_bucket{le="+Inf"}') == count
    assert metric(text, "nemotron_elastic_generated_tokens_per_second") > 0


def test_the_rate_window_and_histogram_buckets():
    now = [100.0]
    m = ServeMetrics(clock=lambda: now[0])
    m.started("a", 7)
    m.tokens("a", 30)
    now[0] = 105.0
    m.tokens("a", 20)
    assert m.tokens_per_second() == pytest.approx(50 / 10)
    now[0] = 112.0  # the first 30 fell out of the 10 s window
    assert m.tokens_per_second() == pytest.approx(20 / 10)
    for seconds in (0.005, 0.2, 100.0):
        m.first_token(seconds)
    m.finished("a")
    text = m.render({"waiting": 3, "completed": 1})
    buckets = [int(v) for v in re.findall(r'_bucket\{le="[^"]+"\} ([0-9]+)', text)]
    assert len(buckets) == len(TTFT_BUCKETS) + 1 and buckets == sorted(buckets) and buckets[0] == 1
    assert buckets[-1] == 3 and buckets[-2] == 2  # 100 s is beyond the last finite bucket
    assert metric(text, "nemotron_elastic_queue_waiting") == 3
    assert metric(text, 'nemotron_elastic_prompt_tokens_total{model="a"}') == 7


def test_the_key_comes_from_the_environment_and_public_binds_are_told(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    args = add_serve_arguments(argparse.ArgumentParser()).parse_args(["--model", "m"])
    assert args.api_key == "from-env"
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost")
    assert not _loopback("0.0.0.0") and not _loopback("192.168.1.4")
