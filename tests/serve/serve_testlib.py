# SPDX-License-Identifier: Apache-2.0
"""Helpers for the serving tests: a micro elastic checkpoint built without training, HTTP client calls.

Imported as `from serve_testlib import ...` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
from pathlib import Path
from typing import Any

import torch

from nemotron_elastic.checkpoint.elastic import save_elastic
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.run import TrainConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.data.tokenizer import train_bpe
from nemotron_elastic.model import HybridLM
from nemotron_elastic.router import Router, build_menu

TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun. " * 6,
    "To be, or not to be, that is the question: whether tis nobler in the mind to suffer. " * 6,
    "A journey of a thousand miles begins with a single step, said the old man to the child. " * 6,
]

# Specs of the micro-hybrid parent (pattern M-*M-, d 32, MLP 64, 4 q / 2 kv heads, 8 Mamba heads in 2
# groups of head dim 8): 0.75 narrows every width axis, 0.5 also halves the Mamba head dim and drops the
# last MLP block, so every axis of the sliced forward and the cache sizes is exercised.
BUDGET_SPECS = {
    1.0: {},
    0.75: {"hidden": 24, "mlp": 48, "mamba_heads": 6, "attention_heads": 4},
    0.5: {
        "hidden": 16,
        "mlp": 32,
        "mamba_heads": 4,
        "attention_heads": 2,
        "mamba_head_dim": 4,
        "layers": [0, 1, 2, 3],
    },
}


def make_elastic_checkpoint(out: Path, seed: int = 0) -> Path:
    """A micro elastic checkpoint with budgets 1.0 / 0.75 / 0.5 (random, but not degenerate, weights)."""
    tok = train_bpe(TEXT, 300)
    cfg = dataclasses.replace(get_preset("micro-hybrid"), vocab_size=len(tok), eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = HybridLM(cfg)
    model.init_weights()
    with torch.no_grad():  # std 1/sqrt(fan_in): logits of order 1, so greedy text varies and ties are rare
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, p.shape[1] ** -0.5)
    specs = {b: SubnetSpec.from_dict(d, cfg) for b, d in BUDGET_SPECS.items()}
    router = Router([build_menu(cfg, "hidden", [1.0, 0.75, 0.5])], list(specs), hidden_dim=8)
    info = {
        "budgets": [{"budget": b, "spec": s.to_dict(), "params": s.param_count()} for b, s in specs.items()]
    }
    train_config = from_dict(TrainConfig, {"parent": "none", "out": str(out)})
    return save_elastic(out, model, tok, router, info, train_config, None)


def request(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """One HTTP call on a fresh connection -> (status, parsed JSON body or text)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text
    finally:
        conn.close()


def post(url: str, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
    return request(url, "POST", path, body, **kw)


def get(url: str, path: str) -> tuple[int, Any]:
    return request(url, "GET", path)


def stream(url: str, path: str, body: dict, timeout: float = 60.0) -> tuple[int, list[Any]]:
    """A streamed call: (status, the `data:` payloads parsed, with "[DONE]" kept as a string)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps({**body, "stream": True}),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, [json.loads(resp.read())]
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        events = []
        for line in resp:
            line = line.decode().rstrip("\n")
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
        return resp.status, events
    finally:
        conn.close()


def streamed_text(events: list[Any], chat: bool) -> str:
    parts = []
    for e in events:
        if e == "[DONE]" or not e.get("choices"):
            continue
        choice = e["choices"][0]
        parts.append(choice["delta"].get("content") or "" if chat else choice["text"])
    return "".join(parts)
