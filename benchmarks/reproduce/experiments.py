# SPDX-License-Identifier: Apache-2.0
"""The runs of the reproduction study, each a folder under the study's output that is skipped once complete.

    scored/                   the parent scored and reordered (skipped when the parent has ranking.json)
    elastic-s{seed}/          the recipe: router, budgets 1.0/0.75/0.5, stage 1 uniform, stage 2 0.5/0.3/0.2
    elastic-s{seed}-o{order}/ the recipe again on another data order (`data.order_seed`): the spread of
                              repeated identical runs that the tie rule of `paired.py` compares against
    stage1only-s{seed}/       the same tokens, all at the stage-1 context with uniform budgets    (Table 4)
    stage2uniform-s{seed}/    stage 2 with uniform budget weights                                 (Table 5)
    homogeneous-s{seed}/      one MLP size for every layer instead of per-layer menus            (ablation)
    uniformspecs-s{seed}/     no router: fixed common-ratio specs of the router's cost            (ablation)
    minitron-{b}-s{seed}/     the Minitron route: that seed's router spec pruned, distilled alone, T tokens
    minitronhalf-{b}-s{seed}/ the same with T/2 tokens, so the two models cost T in all (the elastic run's T)
    scratch-{b}-s{seed}/      the same architecture trained from random init, T tokens each

Every elastic variant sees the same number of tokens T (stage-2 steps hold as many tokens as stage-1
steps: half the batch at twice the context). The elastic variants run for every seed in `seeds`; the
Minitron and scratch routes for `route_seeds`, each with that seed's router specs; the spread runs repeat
`elastic-s{spread_seed}` once per `spread_order_seeds`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.config.types import from_dict, to_dict
from nemotron_elastic.subnet.uniform import spec_for_budget

BUDGETS = (1.0, 0.75, 0.5)
STAGE2_WEIGHTS = (0.5, 0.3, 0.2)
VARIANTS = ("elastic", "stage1only", "stage2uniform", "homogeneous", "uniformspecs")
ROUTER_AXES = ("hidden", "mlp", "mamba_heads")  # the axes the menus make elastic (uniform specs shrink these)


@dataclass(frozen=True)
class Plan:
    """Sizes of the study. Tokens per optimizer step: micro_batch * grad_accum * seq_len in stage 1."""

    stage1_steps: int = 150
    stage2_steps: int = 60
    seq_len: int = 256
    micro_batch: int = 4
    grad_accum: int = 3
    lr: float = 5e-4
    scratch_lr: float = 3e-3
    eval_tokens: int = 16384  # held-out tokens of the final evaluation of every model
    train_eval_tokens: int = 8192  # held-out tokens of the evaluations during training (learning curves)
    long_seq: int = 1024  # the long-context evaluation (stage 2 trains at 2 * seq_len)
    score_samples: int = 32
    seeds: tuple[int, ...] = (0, 1, 2)  # every elastic variant
    route_seeds: tuple[int, ...] = (0, 1)  # the Minitron and from-scratch routes (each seed's router specs)
    spread_seed: int = 0  # the recipe run repeated on other data orders ...
    spread_order_seeds: tuple[int, ...] = (1000,)  # ... these (data.order_seed), for the spread of repeats
    menus: dict[str, Any] = dataclasses.field(default_factory=lambda: {
        "hidden": [1.0, 0.875, 0.75, 0.625, 0.5],
        "mlp": [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25],
        "mamba_heads": [1.0, 0.875, 0.75, 0.625, 0.5],
        "depth": [0, 1, 2],
        "per_layer": ["mlp"],
    })

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds: at least one")
        if not set(self.route_seeds) <= set(self.seeds):
            raise ValueError(f"route_seeds {self.route_seeds} must be among seeds {self.seeds} (their router specs)")

    @property
    def steps(self) -> int:
        return self.stage1_steps + self.stage2_steps

    @property
    def tokens(self) -> int:
        """T: tokens one run trains on."""
        return self.steps * self.micro_batch * self.grad_accum * self.seq_len

    def half(self) -> Plan:
        """The same plan with half the steps of each stage (T/2 tokens when the step counts are even)."""
        return dataclasses.replace(self, stage1_steps=max(1, self.stage1_steps // 2),
                                   stage2_steps=max(1, self.stage2_steps // 2))

    def training_key(self) -> dict[str, Any]:
        """What a finished run's numbers depend on (not which seeds the study runs): two plans with the same
        key produce interchangeable runs."""
        skip = {"seeds", "route_seeds", "spread_seed", "spread_order_seeds"}
        return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(self))).items() if k not in skip}

    def run_names(self) -> list[str]:
        """Every training run of the study, in the order `run.py` trains them."""
        names = []
        for seed in self.seeds:
            names.append(f"elastic-s{seed}")
            if seed == self.spread_seed:
                names += [f"elastic-s{seed}-o{o}" for o in self.spread_order_seeds]
            if seed in self.route_seeds:
                names += [f"{kind}-{b:g}-s{seed}" for b in BUDGETS[1:]
                          for kind in ("minitron", "scratch", "minitronhalf")]
            names += [f"{v}-s{seed}" for v in VARIANTS[1:]]
        return names

    def stages(self, variant: str) -> list[dict[str, Any]]:
        s1 = {"name": "stage1", "steps": self.stage1_steps, "seq_len": self.seq_len,
              "micro_batch": self.micro_batch, "grad_accum": self.grad_accum}
        s2 = {"name": "stage2", "steps": self.stage2_steps, "seq_len": 2 * self.seq_len,
              "micro_batch": max(1, self.micro_batch // 2), "grad_accum": self.grad_accum,
              "budget_weights": list(STAGE2_WEIGHTS)}
        if variant == "stage1only":
            return [s1 | {"steps": self.steps}]
        if variant in ("stage2uniform", "single"):  # "single": one budget, so no weights
            s2["budget_weights"] = None
        return [s1, s2]


def _common(plan: Plan, out: Path, tokens_dir: Path, seed: int, order_seed: int | None = None) -> dict[str, Any]:
    every = max(1, plan.steps // 5)
    data = {"eval_tokens": plan.train_eval_tokens, "workdir": str(tokens_dir)}
    if order_seed is not None:
        data["order_seed"] = order_seed
    return {"out": str(out), "seed": seed, "data": data,
            "log_every": max(1, plan.steps // 30), "eval_every": every, "save_every": plan.steps}


def override(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`data` with dotted keys set (`{"router.full_pull": 0.0}`, `{"stages.1.budget_weights": [...]}`; list
    items by index; missing sections are created). A misspelled key is not ignored: the config loader
    refuses unknown keys, and an index past a list's end raises IndexError."""
    data = json.loads(json.dumps(data))
    for key, value in changes.items():
        *path, last = key.split(".")
        node: Any = data
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


# The router settings the study's runs were trained with, named rather than left to the library defaults so a
# later change of default keeps them comparable (and their committed JSON reusable): the study predates
# `router.budget_probs: sampled` becoming the default (docs/METHOD.md 11; `decision.py` measured both).
RECIPE_ROUTER = {"budget_probs": "unsharpened", "decision": "within_budget"}


def elastic_config(plan: Plan, variant: str, scored: Path, out: Path, tokens_dir: Path, seed: int,
                   specs: list[str] | None = None, budgets: tuple[float, ...] = BUDGETS,
                   order_seed: int | None = None, changes: dict[str, Any] | None = None):
    """The TrainConfig of one elastic variant (or, with `specs`, of a fixed-spec run); `order_seed`: another
    data order than the seed's (a repeated run for the spread); `changes`: settings over the recipe's
    (`override`), validated by the config like any other."""
    from nemotron_elastic.config.run import TrainConfig

    menus = dict(plan.menus)
    if variant == "homogeneous":
        menus["per_layer"] = []
    data = _common(plan, out, tokens_dir, seed, order_seed) | {
        "parent": str(scored), "budgets": list(budgets), "menus": menus, "specs": specs,
        "router": dict(RECIPE_ROUTER),
        "optim": {"lr": plan.lr, "warmup_steps": max(1, plan.steps // 10)},
        "stages": plan.stages("single" if len(budgets) == 1 else variant),
    }
    return from_dict(TrainConfig, override(data, changes or {}))


def scratch_config(plan: Plan, spec: SubnetSpec, parent: Path, out: Path, tokens_dir: Path, seed: int):
    """A PretrainConfig for `spec`'s architecture from random init, the parent's tokenizer, T tokens."""
    from nemotron_elastic.config.run import PretrainConfig

    stages = [{"name": "pretrain", "steps": plan.steps, "seq_len": plan.seq_len,
               "micro_batch": plan.micro_batch * plan.grad_accum, "grad_accum": 1}]
    data = _common(plan, out, tokens_dir, seed) | {
        "preset": None, "model": to_dict(spec.config()), "tokenizer": str(parent),
        "optim": {"lr": plan.scratch_lr, "warmup_steps": max(1, plan.steps // 10), "weight_decay": 0.1},
        "stages": stages,
    }
    return from_dict(PretrainConfig, data)


def uniform_specs(chosen: dict[float, SubnetSpec], config) -> dict[float, SubnetSpec]:
    """Per budget: the common-ratio spec (router axes shrunk alike, no depth cut) with at most the
    parameters the router's spec in `chosen` has, i.e. the same cost."""
    full = config.num_parameters()
    return {b: spec_for_budget(config, min(1.0, s.param_count() / full), ROUTER_AXES) for b, s in chosen.items()}


def router_specs(elastic_model: Path | dict[str, Any], config) -> dict[float, SubnetSpec]:
    """{budget: spec} of an elastic run: from its model folder's budgets.json, or that file's content (the
    `budgets` entry a run keeps in the study's JSON)."""
    info = (json.loads((elastic_model / "budgets.json").read_text()) if isinstance(elastic_model, Path)
            else elastic_model)
    return {float(e["budget"]): SubnetSpec.from_dict(e["spec"], config) for e in info["budgets"]}


def write_spec(spec: SubnetSpec, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict(), indent=1) + "\n")
    return str(path)


def run_complete(folder: Path) -> bool:
    """A finished run: its final output folder exists (written atomically at the very end)."""
    return (folder / "model" / "config.yaml").is_file()
