# SPDX-License-Identifier: Apache-2.0
"""The elastic checkpoint: one folder holding the many-in-one model and everything needed to use it.

    config.yaml, model.safetensors, tokenizer files   the trained weights (a native checkpoint)
    router.safetensors, router.json                   the router (budgets, menus, drop order, sizes)
    budgets.json                                      per trained budget: the router's SubnetSpec, its
                                                      parameter count and cost ratio
    ranking.json                                      the parent's importance rankings (copied)
    train_config.yaml                                 the resolved training config

`export --budget B`, `eval` and `serve` need nothing else. Written atomically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config.spec import SubnetSpec
from ..config.yaml_io import save_yaml
from ..io import atomic_output_dir
from ..router.choices import to_spec
from ..router.decision import CostTable, decide
from ..router.menus import AxisMenu
from ..router.router import Router
from .load import load_model
from .native import write_native

ROUTER_JSON, ROUTER_WEIGHTS, BUDGETS_JSON = "router.json", "router.safetensors", "budgets.json"


def router_description(router: Router) -> dict[str, Any]:
    return {
        "budgets": router.budgets,
        "hidden_dim": router.nets[next(iter(router.nets))][0].out_features,
        "menus": {
            axis: {"choices": m.choices.tolist(), "per_layer": m.per_layer, "drop_order": list(m.drop_order)}
            for axis, m in router.menus.items()
        },
    }


def router_from_description(desc: dict[str, Any]) -> Router:
    menus = [
        AxisMenu(axis, torch.tensor(m["choices"], dtype=torch.long), m["per_layer"], tuple(m["drop_order"]))
        for axis, m in desc["menus"].items()
    ]
    return Router(menus, desc["budgets"], hidden_dim=desc["hidden_dim"])


def save_elastic(
    out: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    router: Router,
    budgets: dict[str, Any],
    train_config: Any,
    ranking: Path | None,
    overwrite: bool = True,
) -> Path:
    """Write the elastic checkpoint folder `out` atomically (replacing an older one)."""
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_native(tmp, model, tokenizer)
        write_elastic_files(tmp, router, budgets, train_config, ranking)
    return out


def write_elastic_files(folder: Path, router: Router, budgets: dict[str, Any], train_config: Any,
                        ranking: Path | None) -> None:
    """What an elastic checkpoint holds besides the native model: the router (weights and description),
    the budgets' specs and costs, the training config and the parent's ranking."""
    save_file({k: v.detach().contiguous().cpu() for k, v in router.state_dict().items()}, str(folder / ROUTER_WEIGHTS))
    (folder / ROUTER_JSON).write_text(json.dumps(router_description(router), indent=2) + "\n")
    (folder / BUDGETS_JSON).write_text(json.dumps(budgets, indent=2) + "\n")
    save_yaml(train_config, folder / "train_config.yaml")
    if ranking is not None and ranking.is_file():
        shutil.copy(ranking, folder / "ranking.json")


def is_elastic(path: str | Path) -> bool:
    return (Path(path) / BUDGETS_JSON).is_file() and (Path(path) / ROUTER_JSON).is_file()


def load_router(path: str | Path) -> Router:
    path = Path(path)
    router = router_from_description(json.loads((path / ROUTER_JSON).read_text()))
    router.load_state_dict(load_file(str(path / ROUTER_WEIGHTS)))
    return router.eval()


def budget_spec(path: str | Path, budget: float, model_config=None) -> SubnetSpec:
    """The SubnetSpec trained for `budget` (a trained budget, or one between two: the router decides)."""
    path = Path(path)
    if not is_elastic(path):
        raise ValueError(f"{path}: not an elastic checkpoint (no {BUDGETS_JSON} / {ROUTER_JSON}); train one first")
    info = json.loads((path / BUDGETS_JSON).read_text())
    if model_config is None:
        model_config = load_model(path).config
    for entry in info["budgets"]:
        if abs(entry["budget"] - budget) < 1e-9:
            return SubnetSpec.from_dict(entry["spec"], model_config)
    if info.get("fixed_specs"):
        trained = ", ".join(f"{e['budget']:g}" for e in info["budgets"])
        raise ValueError(f"budget {budget:g}: {path} was trained on fixed specs (no router), so only its trained "
                         f"budgets exist ({trained})")

    router = load_router(path)
    with torch.no_grad():
        logits = router.logits(budget)  # raises a clear error outside the trained range
    table = None  # checkpoints written before `router.decision` existed took the argmax
    if info.get("decision") == "within_budget":
        kind = info.get("budget_kind", "params")
        table = CostTable(model_config, router.menus, kind, info.get("memory_setting") if kind == "memory" else None)
    choice = decide(logits, budget, table, info.get("dead_zone", 0.05))
    return to_spec(model_config, router.menus, logits, choice)
