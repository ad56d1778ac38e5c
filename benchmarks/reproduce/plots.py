# SPDX-License-Identifier: Apache-2.0
"""The study's plots: loss against tokens spent on the family, perplexity per variant and budget."""

from __future__ import annotations

from pathlib import Path

from tables import BUDGET_LABELS, mean_halfrange, variant_values


def plot_curves(results: dict, path: Path) -> None:
    """Held-out loss of the 0.75 and 0.5 models against the tokens spent on the family so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    main = [r for r in runs.values() if r["variant"] == "elastic" and r.get("order_seed") is None]
    first = min(main, key=lambda r: r["seed"], default=None)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    for ax, label in zip(axes, BUDGET_LABELS[1:]):
        if first:
            pts = [(p["tokens"], p[label]["ce"]) for p in first["curve"] if label in p]
            ax.plot(*zip(*pts), "o-", label=f"elastic (one run, all budgets), seed {first['seed']}")
        for variant, style in (("minitron", "s-"), ("minitronhalf", "D-"), ("scratch", "^-")):
            offset = 0
            for b in BUDGET_LABELS[1:]:  # the route's runs of the first seed, one per size, in budget order
                run = next((r for r in runs.values() if r["variant"] == variant and f"{r.get('budget'):g}" == b
                            and first is not None and r.get("seed") == first["seed"]), None)
                if run is None:
                    continue
                if b == label:
                    # a Minitron run logs per budget (it is an elastic run of one budget); pretrain logs ce
                    pts = [(offset + p["tokens"], p[b]["ce"] if variant != "scratch" else p["ce"])
                           for p in run["curve"]]
                    ax.plot(*zip(*pts), style, label=f"{variant} (one run per size)")
                offset += run["tokens"]
        ax.set_title(f"budget {label}")
        ax.set_xlabel("tokens spent on the family")
        ax.set_ylabel("held-out loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_variants(results: dict, ctx: str, path: Path) -> None:
    """Perplexity per budget of every elastic variant (mean over seeds: a picture, the verdicts are paired)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = ["elastic", "stage1only", "stage2uniform", "homogeneous", "uniformspecs", "minitron", "minitronhalf", "before"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        means = [(mean_halfrange(variant_values(results, v, b, ctx)) or (float("nan"), 0))[0] for b in BUDGET_LABELS]
        ax.bar([j + i * width for j in range(3)], means, width, label=v)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(3)], [f"budget {b}" for b in BUDGET_LABELS])
    ax.set_ylabel(f"held-out perplexity @ {ctx} tokens")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
