# SPDX-License-Identifier: Apache-2.0
"""Does the router's chosen sub-model land within 5% of its budget? Both decision rules, side by side.

docs/METHOD.md 7.3: given only the budget loss, the chosen specs should land within the dead zone of every target.
For each parent x menu (homogeneous / per-layer) x budget kind (params / memory) x form of the budget
loss' probabilities (`unsharpened`, the training default, / `sampled`, the paper's Gumbel form) x seed,
the router is trained on the budget loss alone (Adam, lr 1e-2, tau 1 -> 0.05, logit scale 1 -> 10), then
each budget's decision is read from the router's logits with

    argmax         the paper's rule: the best choice of every row
    within_budget  the default: the best-scoring choice whose cost is within 5% (router/within_budget.py)

and its exact cost compared with the target. Also timed: one decision from Gumbel-perturbed scores (what a
training step adds), for the menus of the tiny hybrid and of the 12B parent.
Writes benchmarks/results/router_landing.json.

    python benchmarks/router_landing.py [--seeds 5 --steps 300]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, write_json  # noqa: E402

from nemotron_elastic.config.presets import get_preset  # noqa: E402
from nemotron_elastic.router import (  # noqa: E402
    CostTable,
    Router,
    budget_loss,
    build_depth_menu,
    build_menu,
    decide,
    logit_scale,
    temperature,
    within_budget,
)

BUDGETS = [1.0, 0.75, 0.5]
MEMORY = {"context": 8192, "batch": 1}


def menus_for(cfg, per_layer: bool) -> dict:
    """The study's menus: hidden, MLP, Mamba heads (per layer or not) and up to 2 dropped layers."""
    menus = [
        build_menu(cfg, "hidden", [1.0, 0.875, 0.75, 0.625, 0.5]),
        build_menu(cfg, "mlp", [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25], per_layer=per_layer),
        build_menu(cfg, "mamba_heads", [1.0, 0.875, 0.75, 0.625, 0.5], per_layer=per_layer),
        build_depth_menu(cfg, list(range(1, cfg.num_layers, 2)), [0, 1, 2]),
    ]
    return {m.axis: m for m in menus}


def budget_only(cfg, menus, kind, probs_form, seed, steps) -> Router:
    torch.manual_seed(seed)
    router = Router(list(menus.values()), BUDGETS)
    opt = torch.optim.Adam(router.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    memory = MEMORY if kind == "memory" else None
    for step in range(steps):
        b = BUDGETS[step % len(BUDGETS)]
        if probs_form == "sampled":
            probs = router.probs(b, temperature(step, steps), logit_scale(step, steps), generator=gen)
        else:
            probs = router.probs(b, gumbel=False)
        loss, _ = budget_loss(cfg, menus, probs, b, kind, memory)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return router


def landing(args) -> tuple[list[dict], dict]:
    runs = []
    for preset, per_layer, kind, form in itertools.product(
        args.presets, (False, True), ("params", "memory"), ("unsharpened", "sampled")
    ):
        cfg = get_preset(preset)
        menus = menus_for(cfg, per_layer)
        table = CostTable(cfg, menus, kind, MEMORY if kind == "memory" else None)
        for seed in range(args.seeds):
            router = budget_only(cfg, menus, kind, form, seed, args.steps)
            with torch.no_grad():
                for b in BUDGETS[1:]:  # the full budget is the parent under both rules
                    logits = router.logits(b)
                    row = {"preset": preset, "per_layer": per_layer, "kind": kind, "probs": form,
                           "seed": seed, "budget": b}
                    for rule, t in (("argmax", None), ("within_budget", table)):
                        ratio = table.ratio(decide(logits, b, t))
                        row[rule] = {"ratio": ratio, "landed": abs(ratio / b - 1) <= 0.05}
                    runs.append(row)
            landed = "  ".join(f"{r['budget']:g}: argmax {r['argmax']['ratio']:.3f} / within "
                               f"{r['within_budget']['ratio']:.3f}" for r in runs[-2:])
            print(f"{preset:<22} per_layer={per_layer!s:<5} {kind:<7} {form:<11} seed {seed}: {landed}")
    summary = {}
    for form in ("unsharpened", "sampled"):
        rows = [r for r in runs if r["probs"] == form]
        summary[form] = {rule: {"landed": sum(r[rule]["landed"] for r in rows), "of": len(rows),
                                "worst_error": max(abs(r[rule]["ratio"] / r["budget"] - 1) for r in rows)}
                         for rule in ("argmax", "within_budget")}
    return runs, summary


def decision_time(presets: list[str], repeats: int = 30) -> dict:
    """Milliseconds per decision from Gumbel-perturbed scores of an untrained router (its argmax rarely
    lands, so the search runs), per-layer menus."""
    out = {}
    for preset in presets:
        cfg = get_preset(preset)
        menus = menus_for(cfg, per_layer=True)
        table = CostTable(cfg, menus)
        router = Router(list(menus.values()), BUDGETS)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            scores = [router.scores(BUDGETS[i % 3], 1.0, 1.0, True, gen) for i in range(repeats)]
        timing = {}
        rules = {"argmax": lambda s, b: decide(s, b),
                 "within_budget": lambda s, b: within_budget(table, s, b)}
        for rule, fn in rules.items():
            start = time.perf_counter()
            for i, s in enumerate(scores):
                fn(s, BUDGETS[i % 3])
            timing[rule] = (time.perf_counter() - start) / repeats * 1e3
        out[preset] = {"rows": len(table.rows), "global_choices": len(table.combos),
                       "ms_per_decision": timing}
        print(f"{preset}: {timing['within_budget']:.2f} ms per decision within the budget "
              f"({len(table.rows)} rows, {len(table.combos)} global choices), argmax {timing['argmax']:.3f} ms")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny-hybrid", "nemotron-nano-12b-v2"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="router_landing.json")
    args = ap.parse_args()
    runs, summary = landing(args)
    result = {
        "benchmark": "router_landing", "steps": args.steps, "seeds": args.seeds, "budgets": BUDGETS,
        "memory_setting": MEMORY, "summary": summary, "decision_time": decision_time(args.presets),
        "runs": runs, "machine": machine(),
    }
    for form, rules in summary.items():
        landed = ", ".join(f"{rule} {v['landed']}/{v['of']} (worst {v['worst_error']:.1%})" for rule, v in rules.items())
        print(f"budget loss on {form} probabilities: landed within 5%: {landed}")
    print(f"written to {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
