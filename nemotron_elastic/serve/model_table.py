# SPDX-License-Identifier: Apache-2.0
"""The served model table: public names -> (budget, SubnetSpec) of one elastic checkpoint.

    NAME         the full parent (always served)
    NAME-1.0     one entry per trained budget of budgets.json (the router's argmax spec, docs/METHOD.md 9)
    NAME-0.75
    NAME-0.5

A plain (non-elastic) model folder is served as NAME and NAME-1.0. A name `NAME-b` for a budget `b`
between two trained ones is resolved on demand with the checkpoint's router (docs/METHOD.md 9: the code can
interpolate unseen budgets) and cached, but not listed. NAME defaults to the checkpoint folder's name, or
its parent's for the trainer's `<run>/model` folder.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint.elastic import BUDGETS_JSON, budget_spec, is_elastic
from ..config.model import ModelConfig
from ..config.spec import SubnetSpec
from ..model.masks import ElasticMasks


class UnknownModelError(LookupError):
    """A request named a model (budget) that is not served."""


@dataclass(frozen=True)
class ServedModel:
    """One servable sub-model: its public name, budget and spec; `masks` is None for the full parent."""

    name: str
    budget: float
    spec: SubnetSpec = field(repr=False)
    trained: bool = True
    masks: ElasticMasks | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, name: str, budget: float, spec: SubnetSpec, trained: bool = True) -> ServedModel:
        """A served model with its sliced masks (None for the full parent: the forward's fast path)."""
        # The sliced masks are built once here and shared by every request of this model (read-only).
        return cls(name, budget, spec, trained, None if spec.is_full() else ElasticMasks.from_spec(spec))

    def describe(self) -> dict[str, Any]:
        """Budget, parameter count, trained flag and spec, as listed by /v1/models."""
        return {
            "budget": self.budget,
            "params": self.spec.param_count(),
            "trained": self.trained,
            "spec": self.spec.to_dict(),
        }


def budget_label(budget: float) -> str:
    """1.0 -> '1.0', 0.75 -> '0.75': the suffix of a budget's model name."""
    return repr(float(budget))


def default_name(path: Path) -> str:
    """A served name for a checkpoint path: its folder name, or the run's name for `<run>/model`."""
    path = path.resolve()
    name = path.parent.name if path.name == "model" and path.parent.name else path.name
    name = path.stem if path.is_file() else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


class ModelTable:
    """The names a checkpoint is served under.

    Args:
        path: the checkpoint path (an elastic folder has budgets.json and the router).
        config: the parent's config (specs are validated against it).
        name: the name prefix (default: `default_name(path)`).
    """

    def __init__(self, path: Path, config: ModelConfig, name: str | None = None) -> None:
        self.path, self.config = path, config
        self.name = name or default_name(path)
        self.elastic = is_elastic(path)
        budgets = json.loads((path / BUDGETS_JSON).read_text())["budgets"] if self.elastic else []
        full = SubnetSpec.full(config)
        self.models: dict[str, ServedModel] = {self.name: ServedModel.build(self.name, 1.0, full)}
        for entry in sorted(budgets, key=lambda e: -e["budget"]):
            label = f"{self.name}-{budget_label(entry['budget'])}"
            spec = SubnetSpec.from_dict(entry["spec"], config)
            self.models[label] = ServedModel.build(label, float(entry["budget"]), spec)
        if not budgets:  # a plain model also answers to NAME-1.0, as an elastic one does
            label = f"{self.name}-{budget_label(1.0)}"
            self.models[label] = ServedModel.build(label, 1.0, full)
        self._interpolated: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    def resolve(self, model: str | float | SubnetSpec | ServedModel | None = None) -> ServedModel:
        """The served model for a name (`NAME`, `NAME-0.5`, or `NAME-b` for a budget the router
        interpolates), a budget, or a spec; None is the full parent.

        Raises:
            UnknownModelError: an unknown name, or a budget outside the trained range.
        """
        if model is None:
            return self.models[self.name]
        if isinstance(model, ServedModel):
            return model
        if isinstance(model, SubnetSpec):
            return ServedModel.build(f"{self.name}-custom", float("nan"), model, trained=False)
        if isinstance(model, (int, float)) and not isinstance(model, bool):
            model = f"{self.name}-{budget_label(model)}"
        if not isinstance(model, str):
            raise UnknownModelError(f"model: expected a name, a budget or a SubnetSpec, got {model!r}")
        if model in self.models:
            return self.models[model]
        budget = self._budget_of(model)
        for served in self.models.values():  # 'NAME-0.50' and 'NAME-0.5' are the same budget
            if budget is not None and served.trained and abs(served.budget - budget) < 1e-9:
                return served
        return self._interpolate(model, budget)

    def _budget_of(self, model: str) -> float | None:
        prefix = f"{self.name}-"
        if not model.startswith(prefix):
            return None
        try:
            return float(model[len(prefix) :])
        except ValueError:
            return None

    def _interpolate(self, model: str, budget: float | None) -> ServedModel:
        with self._lock:
            if model in self._interpolated:
                return self._interpolated[model]
        if budget is None or not self.elastic:
            raise UnknownModelError(f"The model '{model}' does not exist (served: {', '.join(self.models)})")

        try:
            spec = budget_spec(self.path, budget, self.config)  # the router's choice between trained budgets
        except ValueError as err:
            raise UnknownModelError(f"The model '{model}' does not exist: {err}") from None
        served = ServedModel.build(model, budget, spec, trained=False)
        with self._lock:
            return self._interpolated.setdefault(model, served)
