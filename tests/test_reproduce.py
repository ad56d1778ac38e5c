# SPDX-License-Identifier: Apache-2.0
"""The reproduction study (`benchmarks/reproduce/run.py --quick`) end to end on a micro parent: every run is
trained, evaluated and reported, finished runs are reused, and the generated reading follows the numbers."""

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce"
sys.path.insert(0, str(ROOT))

import claims as claims_table
import run
import tables

RUNS = {"elastic-s0", "elastic-s0-o1000", "stage1only-s0", "stage2uniform-s0", "homogeneous-s0", "uniformspecs-s0",
        "minitron-0.75-s0", "minitron-0.5-s0", "minitronhalf-0.75-s0", "minitronhalf-0.5-s0", "scratch-0.75-s0",
        "scratch-0.5-s0", "parent-sliced"}
ROUTES = ("minitron", "minitronhalf", "scratch")


@pytest.fixture(scope="module")
def study(tmp_path_factory, micro_parent):
    root = tmp_path_factory.mktemp("reproduce")
    (root / "parent").symlink_to(micro_parent, target_is_directory=True)
    args = ["--parent", str(root / "parent"), "--out", str(root / "out"), "--quick", "--no-progress",
            "--results", str(root / "r.json"), "--doc", str(root / "doc" / "RESULTS.md")]
    run.main(args)
    return root, args


def test_quick_study_trains_evaluates_and_reports_every_run(study):
    root, _ = study
    results = json.loads((root / "r.json").read_text())
    assert set(results["runs"]) == RUNS
    assert results["complete"] and results["planned_runs"] == [n for n in results["runs"] if n != "parent-sliced"]
    assert results["train_seconds_total"] > 0 and results["device"]
    for name, r in results["runs"].items():
        for ctx in ("32", "64"):
            labels = set(r["eval"][ctx])
            assert labels == ({"1", "0.75", "0.5"} if r["variant"] not in ROUTES
                              else {f"{r['budget']:g}"}), (name, labels)
    # the Minitron and scratch models have the architecture the elastic run chose for their budget
    chosen = results["runs"]["elastic-s0"]["eval"]["32"]
    for b in ("0.75", "0.5"):
        for kind in ROUTES:
            assert results["runs"][f"{kind}-{b}-s0"]["eval"]["32"][b]["params"] == chosen[b]["params"]
        uniform = results["runs"]["uniformspecs-s0"]["eval"]["32"][b]["params"]
        assert uniform <= chosen[b]["params"]
    # T/2 per Minitron model: the two cost what the elastic run did
    assert 2 * results["runs"]["minitronhalf-0.5-s0"]["tokens"] == results["runs"]["elastic-s0"]["tokens"]
    # the repeat of the recipe run: same seed, another data order
    repeat = results["runs"]["elastic-s0-o1000"]
    assert (repeat["variant"], repeat["seed"], repeat["order_seed"]) == ("elastic", 0, 1000)
    assert results["memory"]["separate_bytes"] > results["memory"]["elastic_bytes"]
    # every router run: where the decision landed (within 5%) and where the router's own argmax did
    for name, r in results["runs"].items():
        if r["variant"] in ROUTES + ("uniformspecs", "before"):
            assert "router_argmax" not in r, name  # no router
            continue
        assert set(r["router_argmax"]) == {"1", "0.75", "0.5"}, name
        assert all(0 < v <= 1 for v in r["router_argmax"].values()), name
        for entry in r["budgets"]["budgets"]:
            assert abs(entry["param_ratio"] / entry["budget"] - 1) <= 0.05, (name, entry)
    doc = (root / "doc" / "RESULTS.md").read_text()
    assert "router's own argmax" in doc
    for heading in ("How comparisons are decided", "Family cost", "Deployment memory", "Stage 2 versus stage 1",
                    "Ablations", "Reading"):
        assert f"## {heading}" in doc
    for png in ("reproduce_curves.png", "reproduce_variants.png"):
        assert (root / "doc" / "results" / png).stat().st_size > 0


def test_second_run_reuses_finished_runs(study, capsys):
    root, args = study
    before = (root / "out" / "elastic-s0" / "model" / "model.safetensors").stat().st_mtime_ns
    run.main(args)
    assert (root / "out" / "elastic-s0" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert "elastic-s0: finished before, reused" in capsys.readouterr().out


def test_runs_are_reused_from_the_json_only_for_the_same_scored_parent(study, tmp_path, capsys):
    """runs/ gone (a fresh clone): the committed JSON's runs are reused when it records the same scored parent;
    a JSON recording another one is not reused."""
    import shutil

    root, args = study
    results = json.loads((root / "r.json").read_text())
    assert results["scored_sha256"] == run.weights_sha256(root / "out" / "scored")
    out = tmp_path / "out"
    shutil.copytree(root / "out" / "scored", out / "scored")  # the parent scored, no run folder
    moved = [a if a != str(root / "out") else str(out) for a in args]
    moved[moved.index("--results") + 1] = str(tmp_path / "r.json")
    moved[moved.index("--doc") + 1] = str(tmp_path / "doc" / "RESULTS.md")
    (tmp_path / "r.json").write_text(json.dumps(results))
    run.main(moved)
    log = capsys.readouterr().out
    assert "elastic-s0: finished before (in the results JSON), reused" in log and "training" not in log
    assert not (out / "elastic-s0").exists()
    assert json.loads((tmp_path / "r.json").read_text())["runs"]["elastic-s0"] == results["runs"]["elastic-s0"]
    (tmp_path / "r.json").write_text(json.dumps(results | {"scored_sha256": "0" * 64}))
    assert run.prior_results(tmp_path / "r.json", run.QUICK, results["scored_sha256"]) is None


def test_reading_follows_the_numbers(study):
    """Paired by seed: a same-sign difference beyond the spread of the repeated run is called; one whose sign
    differs between seeds is a tie."""
    root, _ = study
    results = json.loads((root / "r.json").read_text())
    fake = copy.deepcopy(results)
    base = fake["runs"]["elastic-s0"]
    for seed, shift in ((0, 0.0), (1, 2.0)):  # two seeds of each variant, 2 apart
        for variant, offset in (("elastic", 0.0), ("stage2uniform", 1.0 if seed else -1.0), ("homogeneous", 10.0)):
            r = copy.deepcopy(base)
            r["variant"], r["seed"] = variant, seed
            for ctx in r["eval"].values():
                for row in ctx.values():
                    row["perplexity"] = 100.0 + shift + offset
            fake["runs"][f"{variant}-s{seed}"] = r
    for ctx in fake["runs"]["elastic-s0-o1000"]["eval"].values():  # the spread: 0.5
        for row in ctx.values():
            row["perplexity"] = 100.5
    claims = {row[0]: row[2] for row in claims_table.claims(fake, "32", "64")}
    assert claims["Weighted stage-2 sampling beats uniform (Table 5)"].startswith("**not shown**")
    assert claims["Per-layer MLP menus beat one MLP size for all layers (budgets < 1)"].startswith("**held**")
    table = "\n".join(tables.paired_table(tables.pr.compare_runs(fake, "elastic", "homogeneous", ["0.5"], ["32"]),
                                           "lower", "higher"))
    assert "-10.00" in table and "0.50" in table and "**lower**" in table


def test_bad_parent_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.main(["--parent", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert "not a model folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_gap_variants_pair_with_the_recipe_runs_of_the_study(study, tmp_path):
    """gap.py on the quick study's folder: each variant's run is recorded with its changes, pairs with the
    study's recipe run of the same seed, and the doc gets its section."""
    import gap
    import report
    import tables

    root, args = study
    out = args[args.index("--out") + 1]
    gap_json = tmp_path / "gap.json"
    gap.main(["--parent", str(root / "parent"), "--out", out, "--quick", "--no-progress", "--seeds", "0",
              "--variants", "fullpull-0", "len2T", "--results", str(gap_json)])
    results = json.loads(gap_json.read_text())
    assert results["complete"] and set(results["runs"]) == {"gap-fullpull-0-s0", "gap-len2T-s0"}
    assert results["runs"]["gap-fullpull-0-s0"]["changes"] == {"router.full_pull": 0.0}
    assert results["runs"]["gap-len2T-s0"]["tokens"] == 2 * results["runs"]["gap-fullpull-0-s0"]["tokens"]
    cfg = (root / "out" / "gap-fullpull-0-s0" / "train_config.yaml").read_text()
    assert "full_pull: 0.0" in cfg
    study_json = json.loads((root / "r.json").read_text())
    rows = tables.gap_analysis(study_json, results, "32")
    assert set(rows) == {"fullpull-0", "len2T"}
    for entries in rows.values():
        assert [e["budget"] for e in entries] == ["1", "0.75", "0.5"]
        assert all(set(e["comparison"].rows) == {0} for e in entries)  # paired with elastic-s0
        assert all(set(e["gap_recipe"]) == {0} for e in entries[1:])  # and with the Minitron runs
    doc = report.gap_section(study_json, results)
    assert doc[0] == "## What closes the gap to Minitron" and any("fullpull-0" in line for line in doc)
    assert tables.gap_analysis(study_json, results | {"scored_sha256": "x"}, "32") == {}
    with pytest.raises(SystemExit):
        gap.main(["--parent", str(root / "parent"), "--variants", "nosuch"])


def test_decision_variants_record_landing_and_pair_with_the_recipe(study, tmp_path):
    """decision.py on the quick study's folder: the paper's decision is trained (its config says so), its
    landing and the router's argmax are recorded, it pairs with the recipe run of the same seed, and the doc
    gets the section with a verdict line per form."""
    import decision
    import landing
    import report

    root, args = study
    out = args[args.index("--out") + 1]
    dec_json = tmp_path / "decision.json"
    decision.main(["--parent", str(root / "parent"), "--out", out, "--quick", "--no-progress", "--seeds", "0",
                   "--variants", "argmax", "--results", str(dec_json)])
    results = json.loads(dec_json.read_text())
    entry = results["runs"]["decision-argmax-s0"]
    assert results["complete"] and entry["changes"] == {"router.decision": "argmax"}
    assert "decision: argmax" in (root / "out" / "decision-argmax-s0" / "train_config.yaml").read_text()
    assert set(entry["router_argmax"]) == {"1", "0.75", "0.5"}
    study_json = json.loads((root / "r.json").read_text())
    rows = landing.analysis(study_json, results, "32")
    assert set(rows) == {"recipe", "argmax"}
    for name, entries in rows.items():
        assert [e["budget"] for e in entries] == ["1", "0.75", "0.5"]
        assert all(set(e["deployed"]) == {0} and 0 <= e["landed"] <= 1 for e in entries)
        assert all((e["comparison"] is None) == (name == "recipe") for e in entries)
    assert all(set(e["comparison"].rows) <= {0} for e in rows["argmax"])
    # the argmax of the paper's decision is the deployed sub-model itself
    assert all(abs(e["argmax"][0] - e["deployed"][0]) < 1e-9 for e in rows["argmax"])
    doc = report.decision_section(study_json, results)
    assert doc[0] == "## The router's deployment decision"
    assert sum(line.startswith("- `router.") for line in doc) == 2
    assert landing.analysis(study_json, results | {"scored_sha256": "x"}, "32") == {}
    # another invocation with another variant adds its runs and keeps the earlier ones
    decision.main(["--parent", str(root / "parent"), "--out", out, "--quick", "--no-progress", "--seeds", "0",
                   "--variants", "sampled", "--results", str(dec_json)])
    both = json.loads(dec_json.read_text())
    assert set(both["runs"]) == {"decision-argmax-s0", "decision-sampled-s0"}
    assert both["runs"]["decision-argmax-s0"] == entry
    assert set(landing.analysis(study_json, both, "32")) == {"recipe", "argmax", "sampled"}
    with pytest.raises(SystemExit):
        decision.main(["--parent", str(root / "parent"), "--variants", "nosuch"])


def test_override_sets_dotted_keys_and_a_misspelling_fails():
    import experiments as ex

    data = {"stages": [{"steps": 1}, {"steps": 2, "budget_weights": [0.5, 0.3, 0.2]}], "optim": {"lr": 1.0}}
    new = ex.override(data, {"stages.1.budget_weights": [0.2, 0.3, 0.5], "router.full_pull": 0.0, "optim.lr": 2.0})
    assert new["stages"][1]["budget_weights"] == [0.2, 0.3, 0.5] and new["router"] == {"full_pull": 0.0}
    assert data["optim"]["lr"] == 1.0  # the input is not changed
    with pytest.raises(IndexError):
        ex.override(data, {"stages.5.steps": 3})
    plan = ex.Plan()
    with pytest.raises(Exception, match="ful_pull"):
        ex.elastic_config(plan, "elastic", Path("p"), Path("o"), Path("t"), 0, changes={"router.ful_pull": 1.0})
