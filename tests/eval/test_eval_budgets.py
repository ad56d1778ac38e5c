# SPDX-License-Identifier: Apache-2.0
"""eval.budgets: which sub-models a request names; untrained budgets refused unless interpolation is asked."""

import json

import pytest
from eval_testlib import SPECS

from nemotron_elastic.checkpoint.native import peek_config
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.eval.targets import parse_budgets, resolve_targets


def test_parse_budgets():
    assert parse_budgets("1.0, 0.75,0.5") == [1.0, 0.75, 0.5]
    for bad, words in (
        ("1.0,x", "not a number"),
        ("1.5", r"outside \(0, 1\]"),
        ("0.5,0.5", "twice"),
        ("", "not a number"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_budgets(bad)


def test_default_is_every_trained_budget_largest_first(elastic_dir):
    cfg = peek_config(elastic_dir)
    targets = resolve_targets(elastic_dir, cfg)
    assert [t.label for t in targets] == ["1.0", "0.75", "0.5"]
    for target in targets:
        assert target.trained and target.spec == SubnetSpec.from_dict(SPECS[target.budget], cfg)
    assert targets[0].spec.is_full() and not targets[2].spec.is_full()


def test_untrained_budget_is_refused_without_interpolate(elastic_dir):
    cfg = peek_config(elastic_dir)
    with pytest.raises(
        ValueError, match=r"budget 0.6 was not trained .*trained: 1.0, 0.75, 0.5.*--interpolate"
    ):
        resolve_targets(elastic_dir, cfg, [0.6])
    [target] = resolve_targets(elastic_dir, cfg, [0.6], interpolate=True)
    assert target.budget == 0.6 and not target.trained and target.describe()["interpolated"]
    assert target.spec.parent == cfg  # a valid spec of this parent (the router's choice)


def test_budget_outside_the_trained_range_is_refused_even_with_interpolate(elastic_dir):
    cfg = peek_config(elastic_dir)
    for interpolate in (False, True):
        with pytest.raises(ValueError, match="outside the trained range"):
            resolve_targets(elastic_dir, cfg, [0.25], interpolate=interpolate)


def test_plain_models_have_one_row_and_take_specs(elastic_dir, tmp_path):
    parent = elastic_dir.parent / "parent"
    cfg = peek_config(parent)
    [row] = resolve_targets(parent, cfg)
    assert row.label == "full" and row.spec.is_full() and row.budget is None
    with pytest.raises(ValueError, match="not an elastic checkpoint"):
        resolve_targets(parent, cfg, [0.5])
    spec_file = tmp_path / "half.json"
    spec_file.write_text(json.dumps(SPECS[0.5]))
    [row] = resolve_targets(parent, cfg, spec=spec_file)
    assert row.label == "half" and row.spec.hidden == SPECS[0.5]["hidden"]
    with pytest.raises(ValueError, match="not both"):
        resolve_targets(parent, cfg, [0.5], spec=spec_file)
    spec_file.write_text(json.dumps({"hidden": 1000}))
    with pytest.raises(ValueError, match=r"subnet.hidden"):
        resolve_targets(parent, cfg, spec=spec_file)
