# SPDX-License-Identifier: Apache-2.0
"""The served model table: public names -> (budget, SubnetSpec) of one elastic checkpoint.

    NAME         the full parent (always served)
    NAME-1.0     one entry per trained budget of budgets.json (the router's argmax spec, docs/METHOD.md 9)
    NAME-0.75
    NAME-0.5

A plain (non-elastic) model folder is served as NAME and NAME-1.0. A name `NAME-b` for a budget `b`
between two trained ones is resolved on demand with the checkpoint's router (docs/METHOD.md 9: the code can
interpolate unseen budgets) and kept in a small LRU cache, but not listed. A budget is written as a plain
decimal (`0.6`, `0.75`, `1.0`, `1`); anything else (`NAME- 0.6`, `NAME-0_6`, `NAME-6e-1`) is an unknown
model. NAME defaults to the checkpoint folder's name, or its parent's for the trainer's `<run>/model` folder.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint.elastic import BUDGETS_JSON, budget_spec, is_elastic
from ..config.model import ModelConfig
from ..config.spec import SubnetSpec
from ..model.masks import ElasticMasks

# In-between budgets resolved on demand and kept: each holds its spec and sliced masks, and any client can
# name a new one (`NAME-0.6001`, ...), so the cache is bounded; the least recently used entry goes first.
MAX_INTERPOLATED = 64
# What a budget suffix may look like: ASCII digits with an optional fraction. Stricter than float(), which
# would also take ' 0.6', '0_6' (as 6.0), '6e-1', 'nan' and non-ASCII digits.
_BUDGET = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


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
        max_interpolated: in-between budgets kept resolved (least recently used dropped first).

    Raises:
        ValueError: budgets.json is unreadable or malformed (the message names the file).
    """

    def __init__(
        self,
        path: Path,
        config: ModelConfig,
        name: str | None = None,
        max_interpolated: int = MAX_INTERPOLATED,
    ) -> None:
        self.path, self.config = path, config
        self.name = name or default_name(path)
        self.elastic = is_elastic(path)
        full = SubnetSpec.full(config)
        self.models: dict[str, ServedModel] = {self.name: ServedModel.build(self.name, 1.0, full)}
        self.models.update(self._trained(path / BUDGETS_JSON) if self.elastic else {})
        if len(self.models) == 1:  # a plain model also answers to NAME-1.0, as an elastic one does
            label = f"{self.name}-{budget_label(1.0)}"
            self.models[label] = ServedModel.build(label, 1.0, full)
        self.max_interpolated = max_interpolated
        self._interpolated: OrderedDict[str, ServedModel] = OrderedDict()
        self._lock = threading.Lock()

    def _trained(self, file: Path) -> dict[str, ServedModel]:
        """NAME-<budget> for every entry of budgets.json, largest budget first."""
        try:
            budgets = json.loads(file.read_text())["budgets"]
            models = {}
            for entry in sorted(budgets, key=lambda e: -e["budget"]):
                label = f"{self.name}-{budget_label(entry['budget'])}"
                spec = SubnetSpec.from_dict(entry["spec"], self.config)
                models[label] = ServedModel.build(label, float(entry["budget"]), spec)
        except (OSError, ValueError, KeyError, TypeError) as err:  # serve's one-line error names the file
            raise ValueError(f"{file}: not a valid budgets file ({type(err).__name__}: {err})") from None
        return models

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
        """The budget of `NAME-<decimal>`; None for any other name."""
        prefix = f"{self.name}-"
        suffix = model[len(prefix) :]
        if not model.startswith(prefix) or not _BUDGET.fullmatch(suffix):
            return None
        return float(suffix)

    def _interpolate(self, model: str, budget: float | None) -> ServedModel:
        with self._lock:
            if model in self._interpolated:
                self._interpolated.move_to_end(model)
                return self._interpolated[model]
        if budget is None or not self.elastic:
            raise UnknownModelError(f"The model '{model}' does not exist (served: {', '.join(self.models)})")

        try:
            spec = budget_spec(self.path, budget, self.config)  # the router's choice between trained budgets
        except ValueError as err:
            raise UnknownModelError(f"The model '{model}' does not exist: {err}") from None
        served = ServedModel.build(model, budget, spec, trained=False)
        with self._lock:
            served = self._interpolated.setdefault(model, served)  # another thread may have built it too
            self._interpolated.move_to_end(model)
            while len(self._interpolated) > self.max_interpolated:
                self._interpolated.popitem(last=False)
            return served
