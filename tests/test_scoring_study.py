# SPDX-License-Identifier: Apache-2.0
"""The retrained scoring comparison (benchmarks/reproduce/scoring.py): the verdict logic on constructed
numbers, and a quick study on a micro parent that scores, cuts, distils, evaluates, records and is read by the
report."""

import copy
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce"
sys.path.insert(0, str(ROOT))

import report
import scoring


def _run(axis, point, seed, ppl, order=None):
    return {"axis": axis, "point": point, "seed": seed, "order_seed": order, "zero_shot": {"32": 500.0},
            "eval": {"32": {"perplexity": ppl}}}


def _results(default: dict, alt: dict, repeat: float | None) -> dict:
    runs = {}
    for seed, ppl in default.items():
        runs[f"d{seed}"] = _run("mlp", "post", seed, ppl)
    for seed, ppl in alt.items():
        runs[f"a{seed}"] = _run("mlp", "pre", seed, ppl)
    if repeat is not None:
        runs["rep"] = _run("mlp", "post", 0, repeat, scoring.SPREAD_ORDER)
    return {"axes": {"mlp": scoring.AXES["mlp"]}, "runs": runs}


def test_a_point_lower_in_every_seed_beyond_the_spread_wins():
    v = scoring.analyse(_results({0: 50.0, 1: 52.0, 2: 51.0}, {0: 53.0, 1: 54.0, 2: 55.0}, 50.5))["mlp"]["32"]
    assert v["status"] == "called" and v["winner"] == "post" and v["spread"] == pytest.approx(0.5)
    v = scoring.analyse(_results({0: 53.0, 1: 54.0, 2: 55.0}, {0: 50.0, 1: 52.0, 2: 51.0}, 52.0))["mlp"]["32"]
    assert v["winner"] == "pre"


def test_mixed_signs_or_a_gap_inside_the_spread_or_no_repeat_is_not_a_win():
    mixed = scoring.analyse(_results({0: 50.0, 1: 55.0, 2: 51.0}, {0: 53.0, 1: 54.0, 2: 55.0}, 50.1))["mlp"]["32"]
    assert (mixed["status"], mixed["winner"]) == ("tie", None)
    inside = scoring.analyse(_results({0: 50.0, 1: 52.0, 2: 51.0}, {0: 51.0, 1: 54.0, 2: 55.0}, 52.0))["mlp"]["32"]
    assert (inside["status"], inside["winner"]) == ("tie", None)
    unmeasured = scoring.analyse(_results({0: 50.0, 1: 52.0}, {0: 53.0, 1: 54.0}, None))["mlp"]["32"]
    assert (unmeasured["status"], unmeasured["spread"]) == ("not called", None)


def test_the_chosen_point_is_the_winner_else_the_paper_point_else_the_default():
    """A point called lower wins its axis; a tie restores the paper's point; attention, where the paper gives
    no point, keeps its default on a tie."""
    import tables

    won = scoring.analyse(_results({0: 50.0, 1: 52.0, 2: 51.0}, {0: 53.0, 1: 54.0, 2: 55.0}, 50.5))
    assert tables.chosen_points({"axes": {"mlp": scoring.AXES["mlp"]}, "verdicts": won})["mlp"]["point"] == "post"
    tie = scoring.analyse(_results({0: 50.0, 1: 55.0, 2: 51.0}, {0: 53.0, 1: 54.0, 2: 55.0}, 50.1))
    assert tables.chosen_points({"axes": {"mlp": scoring.AXES["mlp"]}, "verdicts": tie})["mlp"]["point"] == "pre"
    att = {"axes": {"attention_heads": scoring.AXES["attention_heads"]}, "verdicts": {"attention_heads": tie["mlp"]}}
    assert tables.chosen_points(att)["attention_heads"]["point"] == "head_output"
    # opposite winners at two contexts are no winner
    both = {"mlp": {"32": tie["mlp"]["32"] | {"winner": "post"}, "64": tie["mlp"]["32"] | {"winner": "pre"}}}
    assert tables.chosen_points({"axes": {"mlp": scoring.AXES["mlp"]}, "verdicts": both})["mlp"]["point"] == "pre"
    # two parents (the study's and SmolLM2's): a call on one and a tie on the other is a call; opposite
    # calls on the two restore the paper's point; an axis only one parent has is judged on that one
    mlp = {"mlp": scoring.AXES["mlp"]}
    pre_won = {"mlp": {"32": tie["mlp"]["32"] | {"winner": "pre"}}}
    assert tables.chosen_points({"axes": mlp, "verdicts": won}, {"axes": mlp, "verdicts": tie})["mlp"]["point"] == "post"
    assert tables.chosen_points({"axes": mlp, "verdicts": won}, {"axes": mlp, "verdicts": pre_won})["mlp"] == {
        "point": "pre", "why": "opposite calls; the paper's point"}
    assert set(tables.chosen_points({"axes": mlp, "verdicts": won}, att)) == {"mlp", "attention_heads"}


def test_planned_runs_pair_both_points_per_seed_and_repeat_the_default_once_per_axis():
    runs = scoring.planned_runs(["mlp", "attention_heads"], (3, 4))
    assert len(runs) == 2 * 2 * 2 + 2
    assert ("mlp", "post", 3, scoring.SPREAD_ORDER) in runs and ("attention_heads", "head_output", 3, 1000) in runs
    assert {(a, p) for a, p, s, _ in runs if s == 4} == {("mlp", "post"), ("mlp", "pre"), ("attention_heads",
                                                         "head_output"), ("attention_heads", "o_proj_input")}


@pytest.fixture(scope="module")
def quick(tmp_path_factory, micro_parent):
    root = tmp_path_factory.mktemp("scoring")
    (root / "parent").symlink_to(micro_parent, target_is_directory=True)
    args = ["--parent", str(root / "parent"), "--out", str(root / "out"), "--quick", "--no-progress",
            "--axes", "mlp", "--seeds", "0", "1", "--results", str(root / "r.json")]
    scoring.main(args)
    return root, args


def test_quick_study_records_every_run_and_a_verdict(quick):
    root, _ = quick
    results = json.loads((root / "r.json").read_text())
    assert results["complete"] and set(results["runs"]) == {"mlp-post-s0", "mlp-pre-s0", "mlp-post-s0-o1000",
                                                             "mlp-post-s1", "mlp-pre-s1"}
    assert set(results["scored_sha256"]) == {"post", "pre"}
    for r in results["runs"].values():
        assert 0 < r["param_ratio"] < 1 and set(r["eval"]) == set(r["zero_shot"]) == {"32", "64"}
        assert r["eval"]["32"]["param_ratio"] == pytest.approx(r["param_ratio"])
    verdict = results["verdicts"]["mlp"]["32"]
    assert set(verdict["diffs"]) == {"0", "1"} and verdict["spread"] is not None
    # the two points cut different MLP channels: the zero-shot cuts differ unless the rankings agree
    rankings = [json.loads((root / "out" / "scored" / p / "ranking.json").read_text())["mlp"] for p in ("post", "pre")]
    zero = {r["point"]: r["zero_shot"]["32"] for r in results["runs"].values() if r["seed"] == 0}
    assert (zero["post"] == zero["pre"]) == (rankings[0] == rankings[1])
    doc = report.scoring_section(results)
    assert doc[0] == "## Scoring points after retraining" and any("post vs pre" in line for line in doc)
    both = report.scoring_section(results, results | {"parent": "runs/smollm2"})  # a second parent: its table too
    assert sum("post vs pre" in line for line in both) == 2 * sum("post vs pre" in line for line in doc)
    assert any("SmolLM2-135M" in line and "runs/smollm2" in line for line in both)


def test_quick_study_reuses_the_json_for_the_same_parent_only(quick, capsys):
    root, args = quick
    results = json.loads((root / "r.json").read_text())
    for name in results["runs"]:
        shutil.rmtree(root / "out" / name)  # as if runs/ were gone (the scored parents stay)
    scoring.main(args)
    assert capsys.readouterr().out.count("(in the results JSON), reused") == len(results["runs"])
    other = copy.deepcopy(results)
    other["scored_sha256"]["pre"] = "0" * 64
    (root / "r.json").write_text(json.dumps(other))
    scoring.main(args[:-1] + [str(root / "r.json")])
    assert "reused" not in capsys.readouterr().out  # another scored parent: every run trained again


def test_bad_parent_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        scoring.main(["--parent", str(tmp_path / "nothing")])


def test_plan_options_shorten_the_plan_and_bad_values_are_one_clear_error(micro_parent, capsys):
    import run

    ap = run.follow_up_parser("doc", "out", "r.json")
    args = ap.parse_args(["--parent", str(micro_parent), "--stage-steps", "20", "8", "--eval-tokens", "4096"])
    _, plan = run.follow_up_plan(ap, args)
    assert (plan.stage1_steps, plan.stage2_steps, plan.eval_tokens) == (20, 8, 4096)
    assert (plan.half().stage1_steps, plan.half().stage2_steps) == (10, 4)
    for bad in (["--stage-steps", "1", "8"], ["--eval-tokens", "0"], ["--stage-steps", "20"]):
        with pytest.raises(SystemExit):
            run.follow_up_plan(ap, ap.parse_args(["--parent", str(micro_parent), *bad]))
    assert "--stage-steps" in capsys.readouterr().err
