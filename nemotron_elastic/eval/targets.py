# SPDX-License-Identifier: Apache-2.0
"""Which sub-models an evaluation runs: budgets of an elastic checkpoint, a spec file, or the whole model.

    resolve_targets("runs/elastic/model")                       every trained budget (budgets.json order)
    resolve_targets("runs/elastic/model", budgets=[0.5])        one trained budget
    resolve_targets("runs/elastic/model", budgets=[0.6], interpolate=True)   the router's spec for 0.6
    resolve_targets("exports/half-hf")                          any native / HF / GGUF model: one row
    resolve_targets("runs/parent", spec="spec.json")            a hand-written SubnetSpec of any model

A budget that was not trained is refused unless the caller asks for interpolation (the router's choice
between the two neighbouring trained budgets, docs/METHOD.md 9). The paper reports trained budgets only, so a
number for an untrained one must never appear in a table without the user having asked for it. A budget
outside the trained range is refused either way (the router has nothing to blend there).

Every check here needs only the checkpoint's small JSON files and the model config, so bad requests fail
before the weights, the tokenizer or the data are read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint.elastic import BUDGETS_JSON, budget_spec, is_elastic
from ..config.model import ModelConfig
from ..config.spec import SubnetSpec, resolve_spec

BUDGET_TOLERANCE = 1e-9  # budgets are compared as floats written by json / argparse


@dataclass(frozen=True)
class EvalTarget:
    """One row of an evaluation: a sub-model of the loaded model.

    Attributes:
        label: the row's name in tables and JSON ("0.5", "full", or the spec file's stem).
        spec: the sub-model, bound to the loaded model's config (`spec.is_full()` for the whole model).
        budget: the budget it was requested at, or None (a plain model or a spec file).
        trained: True for a budget listed in budgets.json, False for an interpolated one.
    """

    label: str
    spec: SubnetSpec
    budget: float | None = None
    trained: bool = True

    def describe(self) -> dict[str, Any]:
        """The JSON fields that identify this row."""
        return {
            "label": self.label,
            "budget": self.budget,
            "trained": self.trained,
            "interpolated": self.budget is not None and not self.trained,
            "spec": self.spec.to_dict(),
        }


def budget_label(budget: float) -> str:
    """0.5 -> '0.5', 1 -> '1.0' (the same spelling as the served model names)."""
    return repr(float(budget))


def parse_budgets(text: str) -> list[float]:
    """'1.0,0.75,0.5' -> [1.0, 0.75, 0.5].

    Raises:
        ValueError: an empty list, a word that is not a number, a budget outside (0, 1], or a repeat.
    """
    budgets = []
    for word in (w.strip() for w in text.split(",")):
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"--budgets: {word!r} is not a number (expected e.g. 1.0,0.75,0.5)") from None
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise ValueError(f"--budgets: {word} is outside (0, 1]; budgets are fractions of the parent")
        if any(abs(value - b) < BUDGET_TOLERANCE for b in budgets):
            raise ValueError(f"--budgets: {word} is listed twice")
        budgets.append(value)
    if not budgets:
        raise ValueError("--budgets: no budget given")
    return budgets


def trained_budgets(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of an elastic checkpoint's budgets.json (`[]` for any other model path)."""
    path = Path(path)
    if not (path.is_dir() and is_elastic(path)):
        return []
    try:
        info = json.loads((path / BUDGETS_JSON).read_text(encoding="utf-8"))
        entries = info["budgets"]
        if not isinstance(entries, list) or not all("budget" in e and "spec" in e for e in entries):
            raise KeyError("budgets")
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"{path / BUDGETS_JSON}: not a budgets file written by `nemotron-elastic train`"
        ) from None
    return entries


def _trained_spec(entries: list[dict[str, Any]], budget: float, config: ModelConfig) -> SubnetSpec | None:
    for entry in entries:
        if abs(float(entry["budget"]) - budget) < BUDGET_TOLERANCE:
            return SubnetSpec.from_dict(entry["spec"], config)
    return None


def _in_range(entries: list[dict[str, Any]], budget: float) -> bool:
    trained = [float(e["budget"]) for e in entries]
    return min(trained) - BUDGET_TOLERANCE <= budget <= max(trained) + BUDGET_TOLERANCE


def _untrained(path: Path, entries: list[dict[str, Any]], budget: float) -> ValueError:
    """The error for a budget that budgets.json does not list (and that may not be interpolated)."""
    trained = sorted((float(e["budget"]) for e in entries), reverse=True)
    listed = ", ".join(budget_label(b) for b in trained)
    if _in_range(entries, budget):
        hint = "pass --interpolate to evaluate the router's spec for it (not a trained sub-model)"
    else:
        lo, hi = budget_label(trained[-1]), budget_label(trained[0])
        hint = f"it is outside the trained range [{lo}, {hi}], so it cannot be interpolated either"
    return ValueError(f"budget {budget_label(budget)} was not trained in {path} (trained: {listed}); {hint}")


def resolve_targets(
    path: str | os.PathLike,
    config: ModelConfig,
    budgets: list[float] | None = None,
    spec: str | os.PathLike | dict | None = None,
    interpolate: bool = False,
) -> list[EvalTarget]:
    """The sub-models to evaluate for one model path.

    Args:
        path: the model path (an elastic checkpoint folder, or any path `load_model` reads).
        config: the model's config (specs are validated against it).
        budgets: budgets of an elastic checkpoint; None: every trained budget (or the whole model when the
            path is not elastic).
        spec: instead of budgets, one SubnetSpec (a JSON file or a dict) of any model.
        interpolate: allow budgets between two trained ones (the router picks their spec).

    Returns:
        One EvalTarget per row, in the order asked (trained budgets: largest first).

    Raises:
        ValueError: budgets and a spec together, budgets on a model that is not elastic, an untrained
            budget without `interpolate`, a budget outside the trained range, or an invalid spec.
        FileNotFoundError: a spec file that does not exist.
    """
    path = Path(path)
    if spec is not None and budgets is not None:
        raise ValueError("--budgets / --spec: pass one of them, not both")
    if spec is not None:
        label = Path(spec).stem if isinstance(spec, (str, os.PathLike)) else "spec"
        return [EvalTarget(label, resolve_spec(config, spec, "--spec"), None, True)]
    entries = trained_budgets(path)
    if not entries:
        if budgets is not None:
            raise ValueError(
                f"--budgets: {path} is not an elastic checkpoint (no budgets.json / router.json); "
                "evaluate it without --budgets, or pass --spec"
            )
        return [EvalTarget("full", SubnetSpec.full(config), None, True)]
    if budgets is None:
        budgets = sorted((float(e["budget"]) for e in entries), reverse=True)
    targets = []
    for budget in budgets:
        trained = _trained_spec(entries, budget, config)
        if trained is not None:
            targets.append(EvalTarget(budget_label(budget), trained, budget, True))
            continue
        if not (interpolate and _in_range(entries, budget)):
            raise _untrained(path, entries, budget)

        interpolated = budget_spec(path, budget, config)  # the router's argmax between trained budgets
        targets.append(EvalTarget(budget_label(budget), interpolated, budget, False))
    return targets
