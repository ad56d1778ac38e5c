# SPDX-License-Identifier: Apache-2.0
"""`demo --quick`: the whole pipeline end to end on a micro model (pretrain, score, train, export, eval,
report), reuse of finished steps, and the refusal of an unrelated output folder."""

import json

import pytest

from nemotron_elastic.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_demo_writes_the_report(demo_dir):
    report = json.loads((demo_dir / "report.json").read_text())
    kinds = {(r["kind"], r["budget"]) for r in report["rows"]}
    assert {("elastic", b) for b in (1.0, 0.75, 0.5)} <= kinds
    assert {("sliced before training", b) for b in (1.0, 0.75, 0.5)} <= kinds
    params = {r["budget"]: r["params"] for r in report["rows"] if r["kind"] == "elastic"}
    assert params[0.5] < params[0.75] <= params[1.0]
    for name in ("report.md", "loss_per_budget.png", "perplexity_vs_params.png"):
        assert (demo_dir / name).stat().st_size > 0
    for b in ("1", "0.75", "0.5"):
        assert (demo_dir / "exports" / f"budget-{b}" / "config.json").is_file()
    # the elastic sub-models beat the same specs cut from the parent before elastic training
    ppl = {(r["kind"], r["budget"]): r["perplexity"] for r in report["rows"]}
    for b in (0.75, 0.5):
        assert ppl[("elastic", b)] < ppl[("sliced before training", b)], (b, ppl)
    budgets = json.loads((demo_dir / "elastic" / "model" / "budgets.json").read_text())
    # and the smallest budget's held-out KD loss to the parent went down (a near-full spec starts near 0)
    assert budgets["final_eval"]["0.5"]["kd"] < budgets["before_training_eval"]["0.5"]["kd"], budgets
    text = (demo_dir / "report.md").read_text()
    assert "| 0.5 |" in text and "sliced-before ppl" in text


def test_second_run_reuses_finished_steps(demo_dir, capsys):
    assert main(["demo", "--quick", "--out", str(demo_dir)]) == 0
    report = json.loads((demo_dir / "report.json").read_text())
    assert report["timings_s"]["pretrain"] == "reused"
    assert report["timings_s"]["score"] == "reused" and report["timings_s"]["train"] == "reused"


def test_unrelated_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a previous demo run" in err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
