# SPDX-License-Identifier: Apache-2.0
"""The lm-eval model `nemotron_elastic`: scores equal a direct computation on the sliced model, and
lm-eval runs offline at two budgets with the shipped tasks (Python API via `eval --tasks`, and the CLI)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from nemotron_elastic import cli
from nemotron_elastic.checkpoint.native import peek_config
from nemotron_elastic.commands import evaluate
from nemotron_elastic.eval.lm_eval_model import NemotronElasticLM
from nemotron_elastic.eval.targets import resolve_targets
from nemotron_elastic.subnet.slicing import slice_model

MAX_LENGTH = 24


@pytest.fixture(scope="module")
def lm_half(elastic_dir):
    return NemotronElasticLM(path=str(elastic_dir), budget=0.5, batch_size=3, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def sliced_half(lm_half):
    """The 0.5 sub-model as a standalone model: the reference the in-parent scores must equal."""
    return slice_model(lm_half.model, lm_half.target.spec).eval()


def reference(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """log p(continuation | context) by one unbatched forward, lm-eval's truncation to MAX_LENGTH + 1."""
    whole = (context + continuation)[-(MAX_LENGTH + 1) :]
    n = min(len(continuation), len(whole) - 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole[:-1]]))[0].double(), -1)  # (T, V)
    target = torch.tensor(whole[-n:])
    scored = logp[-n:]
    return scored.gather(-1, target[:, None]).sum().item(), bool((scored.argmax(-1) == target).all())


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_loglikelihood_equals_the_sliced_model(lm_half, sliced_half):
    assert lm_half.masks is not None  # budget 0.5 runs inside the parent, sliced
    pairs = [("The quick brown", " fox"), ("", "Hello world"), ("word " * 40, " end"), ("A", " b c d e f g")]
    got = lm_half.loglikelihood([request("loglikelihood", *p) for p in pairs])
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        if context:
            ctx_ids, cont_ids = lm_half._encode_pair(context, continuation)
        else:
            ctx_ids, cont_ids = [lm_half.prefix_token_id], lm_half.tok_encode(continuation)
        want, want_greedy = reference(sliced_half, ctx_ids, cont_ids)
        print(f"{context[:12]!r}: {logprob:.8f} vs {want:.8f}")
        assert logprob == pytest.approx(want, rel=1e-5, abs=1e-5) and greedy == want_greedy


def test_loglikelihood_rolling_scores_every_token_once(lm_half, sliced_half):
    texts = ["A short text.", "A longer text that needs several windows of twenty-four tokens. " * 3]
    got = lm_half.loglikelihood_rolling([request("loglikelihood_rolling", t) for t in texts])
    for text, total in zip(texts, got):
        ids = lm_half.tok_encode(text)
        windows = list(
            map(make_disjoint_window, get_rolling_token_windows(ids, lm_half.prefix_token_id, MAX_LENGTH, 1))
        )
        assert sum(len(c) for _, c in windows) == len(ids)
        want = sum(reference(sliced_half, ctx, cont)[0] for ctx, cont in windows)
        print(f"{len(ids)} tokens in {len(windows)} windows: {total:.6f} vs {want:.6f}")
        assert total == pytest.approx(want, rel=1e-5)


def test_generate_until_is_the_sliced_models_greedy_text_cut_at_the_stop(lm_half, sliced_half):
    context = "The quick brown fox"
    [full] = lm_half.generate_until(
        [request("generate_until", context, {"until": ["@@"], "max_gen_toks": 8})]
    )
    ids = torch.tensor([lm_half.tok_encode(context)])
    expected = sliced_half.generate(ids, 8, eos_token_id=lm_half.eot_token_id)[0, ids.shape[1] :]
    assert full == lm_half.tok_decode(expected.tolist())
    stop = full[len(full) // 2 :][:2] if len(full) > 1 else "@@"
    [cut] = lm_half.generate_until([request("generate_until", context, {"until": [stop], "max_gen_toks": 8})])
    assert full.startswith(cut) and stop not in cut


def test_batched_generate_until_equals_one_at_a_time_and_stops_early(lm_half, elastic_dir):
    contexts = ["The quick brown fox", "A", "word " * 6, "Hello there, how", "x y z"]
    one = NemotronElasticLM(path=str(elastic_dir), budget=0.5, batch_size=1, max_length=MAX_LENGTH)
    alone = [one.generate_until([request("generate_until", c, {"until": ["@@"], "max_gen_toks": 8})])[0]
             for c in contexts]
    stops = [text[len(text) // 2:][:2] or "@@" for text in alone]
    reqs = [request("generate_until", c, {"until": [s], "max_gen_toks": 8}) for c, s in zip(contexts, stops)]
    cut = lm_half.generate_until(reqs)  # batch_size 3: rows join as others leave
    for text, stop, got in zip(alone, stops, cut):
        assert got == text[: text.index(stop)] if stop in text else got == text
    # a row leaves as soon as its stop string appears: fewer tokens than max_gen_toks were generated
    assert sum(len(one.tok_encode(t)) for t in cut) <= lm_half.generated_tokens < 8 * len(reqs)


def test_bad_model_args_are_refused(elastic_dir):
    with pytest.raises(ValueError, match="unknown model_args"):
        NemotronElasticLM(path=str(elastic_dir), bugdet=0.5)
    with pytest.raises(ValueError, match="budget 0.6 was not trained"):
        NemotronElasticLM(path=str(elastic_dir), budget=0.6)
    lm = NemotronElasticLM(path=str(elastic_dir), budget=0.6, interpolate=True, max_length=MAX_LENGTH)
    assert not lm.target.trained


def test_eval_tasks_run_lm_eval_offline_at_two_budgets(elastic_dir, tmp_path, capsys, monkeypatch):
    if evaluate not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, evaluate))
    args = ["eval", "--model", str(elastic_dir), "--out", str(tmp_path)]
    args += (
        "--budgets 1.0,0.5 --tasks nemotron_heldout --limit 3 --max-tokens 256 --seq-len 32 --quiet".split()
    )
    assert cli.main(args) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["1.0", "0.5"]
    for row in rows:
        cloze, ppl = row["tasks"]["nemotron_heldout_cloze"], row["tasks"]["nemotron_heldout_ppl"]
        assert 0.0 <= cloze["acc"] <= 1.0 and cloze["perplexity"] > 1.0
        assert math.isfinite(ppl["bits_per_byte"]) and ppl["word_perplexity"] > 1.0
    assert rows[0]["tasks"] != rows[1]["tasks"]  # two different sub-models were scored
    assert "cloze.acc" in capsys.readouterr().out


def test_lm_eval_command_line_with_the_registered_model(elastic_dir, tmp_path):
    cmd = [sys.executable, "-m", "nemotron_elastic.eval.lm_eval_main", "--output_path", str(tmp_path)]
    cmd += ["--model_args", f"path={elastic_dir},budget=0.75,max_length={MAX_LENGTH}"]
    cmd += "--model nemotron_elastic --tasks nemotron_heldout_cloze --limit 2".split()
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [result] = list(tmp_path.rglob("results_*.json"))
    data = json.loads(result.read_text())
    assert 0.0 <= data["results"]["nemotron_heldout_cloze"]["acc,none"] <= 1.0
    assert data["config"]["nemotron_elastic"]["budget"] == 0.75


@pytest.mark.slow
def test_lm_eval_on_a_checkpoint_written_by_the_trainer(tmp_path):
    """The same offline lm-eval run on an elastic checkpoint that `nemotron-elastic train` wrote."""
    from eval_testlib import MENUS, make_parent

    from nemotron_elastic.config.run import TrainConfig
    from nemotron_elastic.config.types import from_dict
    from nemotron_elastic.data.corpus import default_corpus
    from nemotron_elastic.eval.lm_eval_tasks import run_tasks
    from nemotron_elastic.train.elastic import ElasticTrainer

    make_parent(tmp_path)
    (tmp_path / "train.txt").write_text("\n\n".join(default_corpus("train", sources=("wikipedia",))[:40]))
    cfg = from_dict(TrainConfig, {
        "parent": str(tmp_path / "parent"), "out": str(tmp_path / "run"), "budgets": [1.0, 0.5], "menus": MENUS,
        "stages": [{"name": "s1", "steps": 4, "seq_len": 32, "micro_batch": 2, "grad_accum": 1}],
        "data": {"train": str(tmp_path / "train.txt"), "heldout": str(tmp_path / "train.txt"), "eval_tokens": 64},
        "log_every": 2, "eval_every": 100, "save_every": 100, "bf16": False,
    })  # fmt: skip
    ElasticTrainer(cfg, progress=False).fit()
    model_dir = tmp_path / "run" / "model"
    results = {}
    for budget in (1.0, 0.5):
        lm = NemotronElasticLM(path=str(model_dir), budget=budget, max_length=MAX_LENGTH)
        results[budget] = run_tasks(lm, ["nemotron_heldout"], limit=3)
        assert set(results[budget]) == {"nemotron_heldout_cloze", "nemotron_heldout_ppl"}
    specs = [resolve_targets(model_dir, peek_config(model_dir), [b])[0].spec for b in (1.0, 0.5)]
    assert (results[1.0] != results[0.5]) == (specs[0] != specs[1])
