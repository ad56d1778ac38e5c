# SPDX-License-Identifier: Apache-2.0
"""The router's deployment decision, judged: the project's forms (`router.decision: within_budget`,
`router.budget_probs: unsharpened`) against the paper's (`argmax`, `sampled`), one at a time and together,
each run paired with the reproduction study's recipe run of the same seed.

    python benchmarks/reproduce/decision.py --parent runs/parent/model [--out runs/reproduce] [--variants argmax ...]

Run after `run.py` on the same parent and folder (as `gap.py`). Variants (the recipe's form in brackets):

    argmax      router.decision: argmax, the paper's row-wise argmax (within_budget: the best-scoring
                sub-model whose cost is within the dead zone of the budget)
    sampled     router.budget_probs: sampled, the budget loss on the temperature-sharpened Gumbel sample
                (unsharpened: softmax of the raw logits)
    paper       both of the paper's forms

Judged two ways (docs/RESULTS.md, "The router's deployment decision"): how often each budget's deployed
sub-model lands within the dead zone (5%) of its budget, and held-out perplexity at matched size (paired
by seed with the recipe, on the size curves where the specs differ, the tie rule of `paired.py`).

Writes benchmarks/results/decision_study.json after every run; `run.py --report-only` puts its reading into
docs/RESULTS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import experiments as ex
from gap import run_variants
from run import _log, follow_up_parser, follow_up_plan

# The paper's forms; the recipe (`experiments.elastic_config`) runs the project's defaults.
FORMS = {"argmax": {"router.decision": "argmax"},
         "sampled": {"router.budget_probs": "sampled"}}


def variants(plan: ex.Plan) -> dict[str, tuple[ex.Plan, dict[str, Any]]]:
    """{name: (the plan it trains with, config changes over the recipe)}."""
    return {"argmax": (plan, FORMS["argmax"]), "sampled": (plan, FORMS["sampled"]),
            "paper": (plan, FORMS["argmax"] | FORMS["sampled"])}


def main(argv: list[str] | None = None) -> None:
    ap = follow_up_parser(__doc__, "runs/reproduce", "decision_study.json")
    ap.add_argument("--variants", nargs="+", help="which variants (default: all, in the order listed)")
    args = ap.parse_args(argv)
    parent, plan = follow_up_plan(ap, args)
    table = variants(plan)
    unknown = [v for v in args.variants or [] if v not in table]
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(table)})")
    run_variants(parent, Path(args.out), plan, table, args.variants or list(table), "decision", Path(args.results),
                 not args.no_progress)
    _log(f"wrote {args.results}")


if __name__ == "__main__":
    main()
