# SPDX-License-Identifier: Apache-2.0
"""The reproduction study's paired analysis (`benchmarks/reproduce/paired.py`) on constructed numbers whose
answer is known: the tie rule, the size curves and their refusal outside the fitted sizes, and the report
generated from the committed JSON (which predates the spread runs) and from a constructed one."""

import copy
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce"
sys.path.insert(0, str(ROOT))

import claims as claims_table
import curves as cv
import paired as pr
import report

COMMITTED = ROOT.parent / "results" / "reproduce.json"


# --- the tie rule ----------------------------------------------------------------------------------------------


def test_same_sign_effect_larger_than_the_spread_is_called():
    v = pr.tie_rule({0: -2.0, 1: -1.5, 2: -3.0}, spread=1.0)
    assert (v.status, v.effect) == (pr.CALLED, -1)
    v = pr.tie_rule({0: 2.0, 1: 1.5, 2: 3.0}, spread=1.0)
    assert (v.status, v.effect) == (pr.CALLED, 1)


def test_mixed_sign_effect_is_a_tie_whatever_the_spread():
    for spread in (0.0, 0.01, None):
        v = pr.tie_rule({0: -5.0, 1: 4.0, 2: -6.0}, spread=spread)
        assert (v.status, v.effect) == (pr.TIE, 0), spread
        assert "sign differs" in v.reason


def test_same_sign_effect_within_the_spread_is_a_tie():
    v = pr.tie_rule({0: -0.5, 1: -0.8, 2: -2.0}, spread=1.0)  # one seed inside the spread is enough
    assert (v.status, v.effect) == (pr.TIE, 0)
    assert "within the spread" in v.reason
    assert pr.tie_rule({0: -1.0, 1: -2.0}, spread=1.0).status == pr.TIE  # equal to the spread: not larger


def test_nothing_is_called_without_a_measured_spread_or_with_one_seed():
    assert pr.tie_rule({0: -9.0, 1: -8.0}, spread=None).status == pr.NOT_CALLED
    assert pr.tie_rule({0: -9.0}, spread=0.1).status == pr.NOT_CALLED
    assert pr.tie_rule({0: 0.0, 1: -3.0}, spread=0.1).status == pr.TIE


def test_paired_differences_use_common_seeds():
    assert pr.paired_differences({0: 5.0, 1: 7.0, 2: 1.0}, {0: 4.0, 1: 9.0}) == {0: 1.0, 1: -2.0}


def test_claim_verdict_combines_the_comparisons():
    called_lower = pr.Verdict(pr.CALLED, -1)
    called_higher = pr.Verdict(pr.CALLED, 1)
    tie = pr.Verdict(pr.TIE)
    assert pr.claim_verdict([called_lower, tie]).status == "held"
    assert pr.claim_verdict([called_higher, tie]).status == "did not hold"
    assert pr.claim_verdict([called_lower, called_higher]).status == "mixed"
    assert pr.claim_verdict([tie, pr.Verdict(pr.NOT_CALLED)]).status == "not shown"
    assert pr.arithmetic(True, "x").status == pr.ARITHMETIC


# --- size curves -----------------------------------------------------------------------------------------------


def test_curve_fit_recovers_a_known_power_law():
    sizes = [0.45, 0.5, 0.62, 0.75, 0.9, 1.0]
    curve = cv.fit_power_law([(x, 40.0 * x ** -0.7) for x in sizes])
    assert curve.a == pytest.approx(math.log(40.0), abs=1e-12)
    assert curve.b == pytest.approx(-0.7, abs=1e-12)
    assert curve.rms == pytest.approx(0.0, abs=1e-12)
    assert (curve.lo, curve.hi, curve.n) == (pytest.approx(0.45), pytest.approx(1.0), 6)
    assert curve(0.7) == pytest.approx(40.0 * 0.7 ** -0.7)
    # with noise of known size the least-squares fit stays close and reports its residual
    noisy = cv.fit_power_law([(x, 40.0 * x ** -0.7 * math.exp(0.01 * (-1) ** i)) for i, x in enumerate(sizes)])
    assert noisy.b == pytest.approx(-0.7, abs=0.05)
    assert 0.005 < noisy.rms < 0.011
    with pytest.raises(ValueError):
        cv.fit_power_law([(0.5, 10.0), (0.5, 11.0)])


def test_comparison_outside_the_fitted_sizes_is_refused():
    wide = cv.fit_power_law([(0.5, 60.0), (0.75, 50.0), (1.0, 43.0)])
    narrow = cv.fit_power_law([(0.5, 59.0), (0.72, 50.0)])  # e.g. a route of two sub-models only
    with pytest.raises(cv.OutsideFit):
        narrow(0.75)
    rows, v = pr.compare_at_size({0: wide, 1: wide}, {0: narrow, 1: narrow}, 0.75, spread_=0.1)
    assert v.status == pr.REFUSED and rows == {}
    assert "outside the fitted sizes" in v.reason
    rows, v = pr.compare_at_size({0: wide, 1: wide}, {0: narrow, 1: narrow}, 0.6, spread_=0.1)
    assert v.status != pr.REFUSED and set(rows) == {0, 1}


# --- on a results dict -----------------------------------------------------------------------------------------


def _run(variant, seed, points, order_seed=None, params_full=1_000_000):
    """A run with {label: (param_ratio, perplexity)} at contexts "32" and "64"."""
    rows = {label: {"perplexity": ppl, "param_ratio": r, "params": round(r * params_full), "nll": math.log(ppl)}
            for label, (r, ppl) in points.items()}
    run = {"variant": variant, "seed": seed, "tokens": 100, "eval": {"32": rows, "64": copy.deepcopy(rows)}}
    if order_seed is not None:
        run["order_seed"] = order_seed
    return run


def _law(r, scale, b=-0.6):
    return scale * r ** b


def _results(spread_shift=0.2):
    """Three seeds: the recipe lands on seed-dependent sizes, the ablation 'worse' is 10% worse at every
    size, 'noise' differs from the recipe by +-3% with alternating sign; one repeat of seed 0."""
    runs = {}
    sizes = {0: (0.72, 0.49), 1: (0.78, 0.50), 2: (0.74, 0.48)}
    for seed, (s75, s50) in sizes.items():
        base = 40.0 + seed  # seeds differ; pairing removes it
        runs[f"elastic-s{seed}"] = _run("elastic", seed, {"1": (1.0, base), "0.75": (s75, _law(s75, base)),
                                                           "0.5": (s50, _law(s50, base))})
        w75, w50 = s75 - 0.02, s50 + 0.01  # other sizes: compared on the curves
        runs[f"worse-s{seed}"] = _run("worse", seed, {"1": (1.0, base * 1.1), "0.75": (w75, _law(w75, base) * 1.1),
                                                       "0.5": (w50, _law(w50, base) * 1.1)})
        f = 1.03 if seed % 2 else 0.97
        runs[f"noise-s{seed}"] = _run("noise", seed, {"1": (1.0, base * f), "0.75": (s75, _law(s75, base) * f),
                                                       "0.5": (s50, _law(s50, base) * f)})
    runs["elastic-s0-o1000"] = _run("elastic", 0, {"1": (1.0, 40.0 + spread_shift),
                                                   "0.75": (0.72, _law(0.72, 40.0) + spread_shift),
                                                   "0.5": (0.49, _law(0.49, 40.0) + spread_shift)}, order_seed=1000)
    runs["parent-sliced"] = {"variant": "before", "seed": None, "tokens": 0,
                             "eval": {"32": {"1": {"perplexity": 38.0, "param_ratio": 1.0, "params": 1_000_000}}}}
    return {"runs": runs}


def test_spread_comes_from_the_repeated_run():
    results = _results(spread_shift=0.2)
    assert cv.spread(results, "1", "32") == pytest.approx(0.2)
    # an additive shift is not exactly a power law: the repeat's fitted curve sits about 0.2 away
    assert cv.curve_spread(results, 0.75, "32") == pytest.approx(0.2, abs=0.01)
    # the repeat is not a seed of its own
    assert set(cv.series(results, "elastic", "1", "32")) == {0, 1, 2}
    assert cv.spread({"runs": {k: v for k, v in results["runs"].items() if "o1000" not in k}}, "1", "32") is None


def test_compare_pairs_same_specs_and_reads_curves_for_different_sizes():
    results = _results(spread_shift=0.2)
    same = pr.compare(results, "elastic", "noise", "0.75", "32")
    assert same.method == "same spec"
    assert same.verdict.status == pr.TIE  # +-3%: the sign alternates over seeds
    full = pr.compare(results, "elastic", "worse", "1", "32")
    assert full.method == "same spec" and (full.verdict.status, full.verdict.effect) == (pr.CALLED, -1)
    curves = pr.compare(results, "elastic", "worse", "0.75", "32")
    assert curves.method == "curves at 0.75x"
    for row in curves.rows.values():  # read at the same size on both power laws: exactly 10% apart
        assert row.b / row.a == pytest.approx(1.1, rel=1e-9)
    assert (curves.verdict.status, curves.verdict.effect) == (pr.CALLED, -1)
    # a spread larger than the effect turns every call into a tie
    big = _results(spread_shift=10.0)
    assert pr.compare(big, "elastic", "worse", "0.75", "32").verdict.status == pr.TIE
    assert pr.compare(big, "elastic", "worse", "1", "32").verdict.status == pr.TIE


def test_compare_refuses_a_budget_outside_a_routes_fitted_sizes():
    results = _results()
    for seed in (0, 1, 2):  # a route of sub-models only, fitted on [0.5, 0.7]
        results["runs"][f"route-0.75-s{seed}"] = _run("route", seed, {"0.75": (0.70, 50.0)})
        results["runs"][f"route-0.5-s{seed}"] = _run("route", seed, {"0.5": (0.50, 60.0)})
    c = pr.compare(results, "elastic", "route", "0.75", "32")
    assert c.verdict.status == pr.REFUSED and not c.rows
    assert pr.compare(results, "elastic", "route", "0.5", "32").verdict.status != pr.REFUSED


def test_full_model_against_the_parent():
    c = pr.compare_to_parent(_results(spread_shift=0.2), "elastic", "32")
    assert set(c.diffs) == {0, 1, 2} and all(d > 0 for d in c.diffs.values())
    assert (c.verdict.status, c.verdict.effect) == (pr.CALLED, 1)


# --- the report ------------------------------------------------------------------------------------------------


def test_report_calls_nothing_without_a_spread():
    """The committed JSON without its repeated runs (as studies before the spread runs were): the doc renders,
    says the spread is unmeasured, and no paired comparison is called."""
    results = json.loads(COMMITTED.read_text())
    results["runs"] = {k: v for k, v in results["runs"].items() if v.get("order_seed") is None}
    doc = report.render(results, {"curves": "c.png", "variants": "v.png"})
    assert "the spread is unmeasured" in doc
    for line in doc.splitlines():
        if line.startswith("|") and ("same spec" in line or "curves at" in line):
            assert "**" not in line.split("|")[-2], line  # a called effect is printed in bold
    if "parent-sliced" in results["runs"]:  # a partial study has no parent evaluation yet
        assert "The full model keeps the parent's quality" in doc
    assert "budgets < 1" in doc
    if "memory" in results:  # written when the study completes
        assert "arithmetic" in doc


def test_report_renders_a_partial_study():
    """A study interrupted after some runs (the JSON is rewritten after each): no depth, memory or parent
    evaluation yet, and it says how far it got."""
    results = json.loads(COMMITTED.read_text())
    for key in ("depth", "memory"):
        results.pop(key, None)
    results["runs"] = {k: v for k, v in results["runs"].items() if k in ("elastic-s0", "stage1only-s0")}
    results |= {"complete": False, "planned_runs": ["elastic-s0", "elastic-s0-o1000", "stage1only-s0"]}
    doc = report.render(results, {"curves": "c.png", "variants": "v.png"})
    assert "Partial study: 2 of 3 planned runs finished" in doc
    assert "Not measured yet" in doc
    assert "Elastic matches the Minitron route at equal total tokens" in doc  # listed, "not measured"


def test_report_calls_effects_when_the_spread_is_measured():
    committed = json.loads(COMMITTED.read_text())
    results = committed | _results(spread_shift=0.2)
    results["runs"] = {k: v for k, v in results["runs"].items() if not k.startswith("noise")}
    for run in results["runs"].values():  # the renamed variant 'worse' plays the common-ratio ablation
        if run["variant"] == "worse":
            run["variant"] = "uniformspecs"
    results["plan"] = committed["plan"] | {"seq_len": 32, "long_seq": 64}
    results.pop("memory", None)
    rows = claims_table.claims(results, "32", "64")
    router = next(r for r in rows if r[0].startswith("Router-chosen specs"))
    assert router[2].startswith("**held**"), router
    parent = next(r for r in rows if r[0].startswith("The full model keeps"))
    assert parent[2].startswith("**did not hold**"), parent


def test_plan_lists_the_runs_of_the_study():
    import experiments as ex

    plan = ex.Plan()
    names = plan.run_names()
    assert plan.seeds == (0, 1, 2) and plan.route_seeds == (0, 1)
    for seed in (0, 1, 2):
        assert {f"{v}-s{seed}" for v in ex.VARIANTS} <= set(names)
    assert "elastic-s0-o1000" in names
    assert {"minitron-0.75-s1", "minitronhalf-0.5-s0", "scratch-0.5-s1"} <= set(names)
    assert not any(n.startswith(("minitron-", "scratch-")) and n.endswith("-s2") for n in names)
    half = plan.half()
    assert half.tokens * 2 == plan.tokens
    assert half.training_key() != plan.training_key()
    assert ex.dataclasses.replace(plan, seeds=(0, 1)).training_key() == ex.Plan(seeds=(0, 1), route_seeds=(0,)).training_key()
    with pytest.raises(ValueError):
        ex.Plan(seeds=(0,), route_seeds=(0, 1))


def test_prior_results_renames_the_old_route_runs(tmp_path):
    import experiments as ex
    import run

    plan = ex.Plan(seeds=(0, 1))
    old = {"plan": ex.dataclasses.asdict(plan) | {"seeds": [0, 1]},
           "runs": {"minitron-0.75": {"variant": "minitron", "seed": 0, "budget": 0.75, "eval": {}},
                    "elastic-s0": {"variant": "elastic", "seed": 0, "eval": {}}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(old))
    prior = run.prior_results(path, ex.Plan())
    assert set(prior["runs"]) == {"minitron-0.75-s0", "elastic-s0"}
    assert run.prior_results(path, ex.dataclasses.replace(plan, lr=1.0)) is None
    assert run.prior_results(path, ex.Plan(), "ab" * 32) is None  # records no parent: not reused
    path.write_text(json.dumps(old | {"scored_sha256": "ab" * 32}))
    assert set(run.prior_results(path, ex.Plan(), "ab" * 32)["runs"]) == {"minitron-0.75-s0", "elastic-s0"}
    assert run.prior_results(path, ex.Plan(), "cd" * 32) is None  # another parent


def test_a_repeat_on_another_size_is_read_on_the_size_curves():
    """The repeat's router landed on another size at 0.75: its spread there is the curves' distance at 0.75x,
    not the difference of two architectures; at the other budgets the raw difference."""
    results = _results(spread_shift=0.2)
    rep = results["runs"]["elastic-s0-o1000"]["eval"]["32"]
    rep["0.75"] = {"perplexity": _law(0.80, 40.0) + 0.2, "param_ratio": 0.80, "params": 800_000}
    raw = abs(rep["0.75"]["perplexity"] - results["runs"]["elastic-s0"]["eval"]["32"]["0.75"]["perplexity"])
    (pair,) = cv.spread_pairs(results, "0.75", "32")
    assert not pair.same_size and pair.matched == pytest.approx(0.2, abs=0.02) and raw > 1.0
    assert cv.spread(results, "0.75", "32") == pytest.approx(pair.matched)
    assert cv.spread(results, "1", "32") == pytest.approx(0.2)
    rep["0.5"] = {"perplexity": 60.0, "param_ratio": 0.60, "params": 600_000}  # the repeat's curve: 0.6 - 1
    assert cv.spread(results, "0.5", "32") is None  # 0.5x outside its fitted sizes: not measured


def test_curves_are_read_at_the_nearest_covered_size_within_the_dead_zone():
    """Every homogeneous run landed just above 0.5x: the curves are read at the smallest size they all cover
    (within 5% of the budget), not refused, and not beyond the dead zone."""
    c = {0: cv.fit_power_law([(1.0, 40.0), (0.504, 60.0)]), 1: cv.fit_power_law([(1.0, 41.0), (0.512, 62.0)])}
    e = {0: cv.fit_power_law([(1.0, 40.0), (0.48, 70.0)]), 1: cv.fit_power_law([(1.0, 41.0), (0.49, 66.0)])}
    assert pr.matched_size(e, c, 0.5) == pytest.approx(0.512)
    assert pr.matched_size(e, c, 0.75) == pytest.approx(0.75)  # covered: the nominal size
    far = {0: cv.fit_power_law([(1.0, 40.0), (0.6, 50.0)])}
    assert pr.matched_size(e, far, 0.5) is None  # 0.6x is 20% off the budget: refused
    rows, verdict = pr.compare_at_size(e, c, pr.matched_size(e, c, 0.5), 0.1)
    assert set(rows) == {0, 1} and verdict.status == pr.CALLED


def test_kd_spread_falls_back_to_held_out_nats_when_the_repeat_landed_elsewhere():
    results = _results(spread_shift=0.2) | {"plan": {"seq_len": 32}}
    for name, kd in (("elastic-s0", 0.5), ("elastic-s1", 0.6), ("elastic-s0-o1000", 0.55)):
        size = results["runs"][name]["eval"]["32"]["0.5"]["param_ratio"]
        results["runs"][name]["budgets"] = {
            "before_training_eval": {"0.5": {"kd": 2.0, "param_ratio": size}},
            "final_eval": {"0.5": {"kd": kd, "param_ratio": size + (0.01 if "o1000" in name else 0.0)}}}
    c = pr.compare_kd_before_after(results, "0.5")
    (pair,) = cv.spread_pairs(results, "0.5", "32")
    assert c.spread == pytest.approx(pair.log_diff) and c.spread < 0.05  # nats, not the KD of another spec
    assert (c.verdict.status, c.verdict.effect) == (pr.CALLED, -1)


def test_gap_reading_sorts_verdicts_and_directions():
    """The gap table's read-out: a called effect, a consistent direction within the spread, and a mixed
    sign each land in their own line; one seed says nothing."""
    import tables

    def entry(budget, diffs, spread):
        c = pr.Comparison("v", "recipe", "v", "256", "same spec",
                          rows={s: pr.Row(10 + d, 10.0, 0.5, 0.5) for s, d in enumerate(diffs)}, spread=spread)
        c.verdict = pr.tie_rule(c.diffs, spread)
        return {"budget": budget, "comparison": c}

    analysis = {"a": [entry(0.5, [-5.0, -6.0, -4.5], 1.0), entry(0.75, [-0.5, -3.0, -2.0], 1.0)],
                "b": [entry(0.5, [2.0, 3.0, 2.5], 1.0), entry(1, [0.3, -0.2, 0.1], 0.5)],
                "c": [entry(0.5, [-9.0], 1.0)]}
    lines = tables.gap_reading(analysis)
    assert lines[0].endswith(": a at 0.5.") and lines[1] == "- Called higher: b at 0.5."
    assert "(a direction only): a at 0.75; higher in the same way: none." in lines[2]
    assert tables.gap_reading({}) == []
    # training length: its own line, never a default
    longer = tables.gap_reading({"len4T": [entry(0.5, [-5.0, -6.0, -4.5], 1.0), entry(1, [-0.5, -0.6, -0.4], 1.0)]})
    assert lines[0].endswith(": a at 0.5.") and longer[0].endswith(": none.")
    assert longer[3] == ("- Training longer (more tokens: the user's cost, not a default): called lower at len4T at 0.5; "
                         "otherwise len4T at 1 (leans lower).")
    assert tables.is_length_variant("len2T") and not tables.is_length_variant("lr-x2")
