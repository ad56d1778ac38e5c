# SPDX-License-Identifier: Apache-2.0
"""The decision study's reading (`benchmarks/reproduce/landing.py`) on constructed numbers: what lands within
the dead zone, the matched-size fallback at a sub-model's own size, and the rule that keeps the project's
form of `router.decision` / `router.budget_probs` or restores the paper's."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce"
sys.path.insert(0, str(ROOT))

import curves as cv
import landing
import paired as pr


def _run(variant: str, seed: int, sizes: dict[str, float], ppl: dict[str, float], argmax=None) -> dict:
    """An elastic run whose budget b deployed a sub-model of sizes[b] x the parent with perplexity ppl[b]."""
    return {"variant": variant, "seed": seed, "order_seed": None,
            "eval": {"32": {b: {"perplexity": ppl[b], "param_ratio": sizes[b], "params": round(1e6 * sizes[b])}
                            for b in sizes}},
            "budgets": {"budgets": [{"budget": float(b), "param_ratio": x} for b, x in sizes.items()]},
            "router_argmax": argmax or dict(sizes)}


def _study(variant_sizes, variant_ppl, seeds=(0, 1, 2), recipe_ppl=None, name="decision:argmax"):
    recipe_sizes = {"1": 1.0, "0.75": 0.74, "0.5": 0.49}
    recipe_ppl = recipe_ppl or {"1": 40.0, "0.75": 50.0, "0.5": 60.0}
    study = {"scored_sha256": "h", "runs": {f"elastic-s{s}": _run("elastic", s, recipe_sizes, recipe_ppl) for s in seeds}}
    # the spread: the recipe's seed 0 repeated on another data order, 0.5 perplexity apart
    rep = _run("elastic", 0, recipe_sizes, {b: p + 0.5 for b, p in recipe_ppl.items()})
    study["runs"]["elastic-s0-o1000"] = rep | {"order_seed": 1000}
    dec = {"scored_sha256": "h", "runs": {f"x-s{s}": _run(name, s, variant_sizes, variant_ppl) for s in seeds}}
    return study, dec


@pytest.mark.parametrize("ratio,budget,ok", [(0.5, 0.5, True), (0.524, 0.5, True), (0.476, 0.5, True),
                                             (0.53, 0.5, False), (0.57, 0.5, False), (0.70, 0.75, False)])
def test_landed_is_within_the_dead_zone(ratio, budget, ok):
    assert landing.landed(ratio, budget) is ok


def test_off_budget_argmax_is_compared_at_its_own_size_and_the_project_form_kept():
    """The paper's argmax lands at 0.57x for budget 0.5: the comparison at the budget is refused (outside the
    dead zone), so each seed is read on the recipe's curve at 0.57x; equal perplexity there is a tie, and the
    project's decision stays because it lands more often."""
    study, dec = _study({"1": 1.0, "0.75": 0.74, "0.5": 0.57}, {"1": 40.0, "0.75": 50.0, "0.5": 0.0})
    curve = cv.route_curves(study, "elastic", "32")[0]
    for r in dec["runs"].values():
        r["eval"]["32"]["0.5"]["perplexity"] = curve(0.57)  # exactly on the recipe's curve
    rows = landing.analysis(study, dec, "32")
    half = rows["argmax"][2]
    assert half["landed"] == 0 and rows["recipe"][2]["landed"] == 3
    assert half["comparison"].method == "at its own size" and half["comparison"].verdict.status == pr.TIE
    v = landing.form_verdicts(rows)
    assert v["router.decision"]["chosen"] == "within_budget"
    assert v["router.budget_probs"]["chosen"] is None  # no `sampled` runs: not measured


def test_a_tie_everywhere_restores_the_paper_form():
    study, dec = _study({"1": 1.0, "0.75": 0.74, "0.5": 0.49}, {"1": 40.0, "0.75": 50.0, "0.5": 60.0},
                        name="decision:sampled")
    dec["runs"]["x-s1"]["eval"]["32"]["0.5"]["perplexity"] = 60.2  # within the 0.5 spread
    rows = landing.analysis(study, dec, "32")
    assert [r["comparison"].method for r in rows["sampled"]] == ["same spec"] * 3
    assert landing.form_verdicts(rows)["router.budget_probs"]["chosen"] == "sampled"


@pytest.mark.parametrize("delta,chosen", [(-2.0, "sampled"), (+2.0, "unsharpened")])
def test_a_called_perplexity_effect_decides_the_form(delta, chosen):
    study, dec = _study({"1": 1.0, "0.75": 0.74, "0.5": 0.49}, {"1": 40.0, "0.75": 50.0, "0.5": 60.0 + delta},
                        name="decision:sampled")
    rows = landing.analysis(study, dec, "32")
    assert rows["sampled"][2]["comparison"].verdict.status == pr.CALLED
    assert landing.form_verdicts(rows)["router.budget_probs"]["chosen"] == chosen


def test_other_scored_parent_pairs_nothing_and_the_table_says_so():
    study, dec = _study({"1": 1.0, "0.75": 0.74, "0.5": 0.49}, {"1": 40.0, "0.75": 50.0, "0.5": 60.0})
    rows = landing.analysis(study, dec | {"scored_sha256": "other"}, "32")
    assert rows == {} and landing.decision_table(rows, "32")[0].startswith("No decision run")
    assert all(v["chosen"] is None for v in landing.form_verdicts(rows).values())


def test_a_follow_up_on_another_plan_pairs_nothing():
    """Runs evaluated on other held-out tokens (or trained for other steps) are not paired with the study's."""
    study, dec = _study({"1": 1.0, "0.75": 0.74, "0.5": 0.49}, {"1": 40.0, "0.75": 50.0, "0.5": 60.0})
    study["plan"] = {"eval_tokens": 16384, "stage1_steps": 150, "seeds": [0, 1, 2]}
    assert landing.analysis(study, dec | {"training_key": {"eval_tokens": 16384, "stage1_steps": 150}}, "32")
    assert landing.analysis(study, dec | {"training_key": {"eval_tokens": 8192, "stage1_steps": 150}}, "32") == {}
