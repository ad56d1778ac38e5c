# SPDX-License-Identifier: Apache-2.0
"""ManyInOneEngine: the budget table, generation per budget inside the one parent (equal to the exported
HF checkpoint of that budget run in transformers), streaming, stops, cancellation, memory accounting."""

import threading
import time

import pytest
import torch
from serve_testlib import BUDGET_SPECS, post

from nemotron_elastic.checkpoint.hf import save_hf
from nemotron_elastic.checkpoint.load import load_model
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.io import load_tokenizer
from nemotron_elastic.serve.engine import ContextLengthError, SamplingParams
from nemotron_elastic.serve.memory import cache_bytes, weight_bytes
from nemotron_elastic.serve.model_table import UnknownModelError
from nemotron_elastic.subnet.cost import predicted_cache_bytes
from nemotron_elastic.subnet.slicing import slice_model

PROMPT = "The quick brown"


def test_model_table_lists_the_parent_and_every_trained_budget(engine):
    assert list(engine.models) == ["micro", "micro-1.0", "micro-0.75", "micro-0.5"]
    for budget, data in BUDGET_SPECS.items():
        served = engine.resolve(f"micro-{budget!r}")
        assert served.budget == budget and served.trained
        assert served.spec == SubnetSpec.from_dict(data, engine.config)
    assert engine.resolve("micro").spec.is_full() and engine.resolve("micro").masks is None
    assert engine.resolve(0.5) is engine.resolve("micro-0.50") is engine.resolve("micro-0.5")
    between = engine.resolve("micro-0.6")  # the router's spec for an untrained budget, not listed
    assert not between.trained and "micro-0.6" not in engine.models
    for name in ("other", "micro-2.0", "micro-0.1", "micro-abc", "micro-"):
        with pytest.raises(UnknownModelError):
            engine.resolve(name)


@pytest.fixture(scope="module")
def hf_exports(engine, tmp_path_factory):
    """The exported standalone HF checkpoint of each budget (slice, then save_hf)."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    parent = load_model(engine.path)  # the served copy keeps its weights in tiles (model/tiles.py)
    for budget in BUDGET_SPECS:
        spec = engine.resolve(budget).spec
        out[budget] = save_hf(
            slice_model(parent, spec), root / f"b{budget}", tokenizer=engine.tokenizer
        )
    return out


@pytest.mark.parametrize("budget", list(BUDGET_SPECS))
def test_greedy_request_equals_the_exported_hf_checkpoint(engine, server, hf_exports, budget):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(hf_exports[budget])).eval()
    tok = load_tokenizer(hf_exports[budget])
    prompt = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=16, do_sample=False)[0, prompt.shape[1] :].tolist()
    ref_text = tok.decode(ref, skip_special_tokens=True)
    assert len(set(ref)) > 3, "degenerate reference text: the test would not tell budgets apart"
    got = engine.generate(engine.encode(PROMPT), budget, max_new_tokens=16, temperature=0.0)
    assert got.token_ids == ref
    status, body = post(
        server.url,
        "/v1/completions",
        {"model": f"micro-{budget!r}", "prompt": PROMPT, "max_tokens": 16, "temperature": 0},
    )
    assert status == 200, body
    assert body["choices"][0]["text"] == ref_text
    assert body["usage"]["completion_tokens"] == len(ref)


def test_budgets_give_different_text(engine):
    ids = engine.encode(PROMPT)
    texts = {b: engine.generate(ids, b, max_new_tokens=12, temperature=0).token_ids for b in BUDGET_SPECS}
    assert len({tuple(t) for t in texts.values()}) == 3


def test_stream_deltas_join_to_the_decoded_completion(engine):
    ids = engine.encode(PROMPT)
    events = list(engine.stream(ids, "micro-0.75", SamplingParams(max_new_tokens=20, temperature=0)))
    assert all(e.finish_reason is None for e in events[:-1]) and events[-1].finish_reason == "length"
    tokens = [t for e in events for t in e.token_ids]
    assert len(tokens) == 20 == events[-1].stats.completion_tokens
    assert "".join(e.text for e in events) == engine.tokenizer.decode(tokens, skip_special_tokens=True)


def test_sampling_is_reproducible_with_a_seed(engine):
    ids = engine.encode(PROMPT)
    a = engine.generate(ids, "micro-0.5", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3)
    b = engine.generate(ids, "micro-0.5", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3)
    c = engine.generate(ids, "micro-0.5", max_new_tokens=12, temperature=1.0, top_k=1, seed=4)
    assert a.token_ids == b.token_ids
    assert c.token_ids == engine.generate(ids, "micro-0.5", max_new_tokens=12, temperature=0).token_ids


def test_stop_string_stop_id_and_eos(engine):
    ids = engine.encode(PROMPT)
    full = engine.generate(ids, "micro", max_new_tokens=16, temperature=0)
    stop = full.text[5:8]
    cut = engine.generate(ids, "micro", max_new_tokens=16, temperature=0, stop=(stop,))
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]
    stop_id = full.token_ids[4]
    by_id = engine.generate(ids, "micro", max_new_tokens=16, temperature=0, stop_token_ids=(stop_id,))
    first = full.token_ids.index(stop_id)
    assert by_id.finish_reason == "stop" and by_id.token_ids == full.token_ids[: first + 1]
    assert by_id.text == engine.tokenizer.decode(full.token_ids[:first], skip_special_tokens=True)


def test_cancel_stops_generation_after_the_current_step(engine):
    cancel = threading.Event()
    stream = engine.stream(
        engine.encode(PROMPT), "micro-0.5", SamplingParams(max_new_tokens=500), cancel=cancel
    )
    next(stream), next(stream)
    cancel.set()
    rest = list(stream)
    assert rest[-1].finish_reason == "cancelled" and rest[-1].stats.completion_tokens <= 3
    assert engine.memory_report()["active_requests"] == 0


def test_context_limit(engine):
    with pytest.raises(ContextLengthError, match="maximum context length is 4096"):
        engine.generate([1] * 4000, "micro", max_new_tokens=100)


@pytest.mark.parametrize("budget", list(BUDGET_SPECS))
def test_cache_bytes_measured_equal_predicted_and_shrink_with_the_budget(engine, budget):
    served = engine.resolve(budget)
    cache = engine.model.new_cache()
    with torch.no_grad():
        engine.model(torch.tensor([engine.encode(PROMPT * 3)]), cache=cache, subnet=served.masks)
    assert cache_bytes(cache) == predicted_cache_bytes(served.spec, cache.seen, engine.dtype) > 0
    done = engine.generate(engine.encode(PROMPT), budget, max_new_tokens=8, temperature=0)
    assert done.stats.cache_bytes == done.stats.predicted_cache_bytes > 0
    if budget < 1.0:
        full = engine.generate(engine.encode(PROMPT), 1.0, max_new_tokens=8, temperature=0)
        assert done.stats.cache_bytes < full.stats.cache_bytes


def test_weights_are_held_once(engine):
    report = engine.memory_report()
    params = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    assert report["weight_bytes"] == weight_bytes(engine.model) == params
    sliced = {name: m["sliced_weight_bytes"] for name, m in report["models"].items()}
    # the parent's own bytes, plus (float32 on a CPU with the kernels) the tiles' padding: at most 15 zero
    # rows per block weight (model/tiles.py), about 1% of this micro model
    padding = report["weight_bytes"] - sliced["micro"]
    assert 0 <= padding <= 0.02 * sliced["micro"]
    assert padding == 0 or engine.model.layers[0].mixer.in_proj.tiles is not None
    assert report["separate_weight_bytes"] == sliced["micro-1.0"] + sliced["micro-0.75"] + sliced["micro-0.5"]
    storages = {p.untyped_storage().data_ptr() for p in engine.model.parameters()}
    for name in engine.models:  # serving a budget allocates no weights: the sliced forward reads views
        engine.generate(engine.encode(PROMPT), name, max_new_tokens=2)
    assert {p.untyped_storage().data_ptr() for p in engine.model.parameters()} == storages
    assert engine.memory_report()["weight_bytes"] == report["weight_bytes"]


def test_a_plain_model_serves_as_one_budget(engine, tmp_path):
    from nemotron_elastic.checkpoint import save_native
    from nemotron_elastic.serve.engine import ManyInOneEngine

    plain = ManyInOneEngine(save_native(engine.model, tmp_path / "plain", tokenizer=engine.tokenizer))
    assert list(plain.models) == ["plain", "plain-1.0"] and not plain.table.elastic
    ids = plain.encode(PROMPT)
    assert (
        plain.generate(ids, "plain-1.0", max_new_tokens=6).token_ids
        == engine.generate(ids, 1.0, max_new_tokens=6).token_ids
    )
    with pytest.raises(UnknownModelError):
        plain.resolve("plain-0.5")


@pytest.mark.parametrize(("kv_cache", "mixed"), [("paged", "widest"), ("padded", "group")])
def test_concurrent_budgets_equal_each_request_alone_for_every_batching_option(engine, elastic_dir, kv_cache, mixed):
    """Requests of every budget in flight together (one batch) give the greedy text each gives alone; with
    the paged KV cache and with one forward at the parent's width (rows masked to their budgets). float64:
    batch shapes reorder sums, and a near-tie of the random micro model must not flip a greedy choice."""
    from nemotron_elastic.serve.engine import ManyInOneEngine

    reference = ManyInOneEngine(elastic_dir, dtype=torch.float64)
    other = ManyInOneEngine(elastic_dir, dtype=torch.float64, kv_cache=kv_cache, mixed=mixed)
    prompts = [engine.encode(p) for p in ("The quick brown", "Once upon", "A")]
    jobs = [(p, name) for p in prompts for name in engine.models]
    alone = {(tuple(p), n): reference.generate(p, n, max_new_tokens=6, ignore_eos=True).token_ids for p, n in jobs}
    reference.close()
    got: dict = {}

    def run(p, n):
        got[(tuple(p), n)] = other.generate(p, n, max_new_tokens=6, ignore_eos=True).token_ids

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert got == alone


def test_a_request_whose_events_fail_ends_alone_and_the_loop_keeps_serving(engine):
    """A sink that raises (text that cannot be handled, say) fails its own request only: its row leaves
    the batch and the next request is served."""

    class Broken:
        def put(self, event):
            raise RuntimeError("cannot handle this")

    stream = engine.start(engine.encode(PROMPT), "micro-0.5", SamplingParams(max_new_tokens=50), Broken())
    assert stream.finished.wait(10) and isinstance(stream.error, RuntimeError)
    done = engine.generate(engine.encode(PROMPT), "micro", max_new_tokens=4, temperature=0)
    assert done.finish_reason == "length" and done.stats.completion_tokens == 4
    deadline = time.monotonic() + 5
    while engine.memory_report()["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.memory_report()["active_requests"] == 0
