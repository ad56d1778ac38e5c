# SPDX-License-Identifier: Apache-2.0
"""What `eval` shows and writes: a terminal table, the JSON record and a plot of quality versus size.

    OUT/eval.json     `evaluate_model`'s result (model, data, settings, one row per budget, versions)
    OUT/eval.png      held-out perplexity against parameters, one point per budget (and the accuracy of
                      each lm-eval task that reports one, in a second panel); needs matplotlib (the
                      `plots` extra): without it the plot is skipped and the numbers are written all the same

Both files are written under a temporary name in OUT and renamed into place, so a reader never sees half
a file and an interrupted run leaves the previous report intact.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import MissingExtraError, atomic_path, import_extra, write_json

JSON_NAME, PLOT_NAME = "eval.json", "eval.png"
ACCURACY_METRICS = ("acc", "acc_norm", "exact_match")  # higher is better, in [0, 1]: plotted
TASK_PREFIX = "nemotron_heldout_"  # dropped from table headers: "cloze.acc" reads better


def model_name(model: str | os.PathLike) -> str:
    """A short name for a model path: its folder name, or the run's name for a trainer's `<run>/model`."""
    path = Path(model).resolve()
    name = path.parent.name if path.name == "model" and path.parent.name else path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_count(n: float) -> str:
    """55408 -> '55.4K', 134515008 -> '134.5M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def _task_columns(rows: list[dict[str, Any]]) -> list[tuple[str, Callable[[dict], str]]]:
    columns = []
    seen = []
    for row in rows:
        for task, metrics in row.get("tasks", {}).items():
            for metric in metrics:
                if metric.endswith("_stderr") or metric == "sample_len" or (task, metric) in seen:
                    continue
                seen.append((task, metric))
                header = f"{task.removeprefix(TASK_PREFIX)}.{metric}"
                columns.append(
                    (
                        header,
                        lambda r, t=task, m=metric: (
                            f"{r.get('tasks', {}).get(t, {}).get(m, float('nan')):.4g}"
                        ),
                    )
                )
    return columns


def format_table(result: dict[str, Any]) -> str:
    """The rows as an aligned text table, with a header line naming the model, data and context."""
    settings, data = result["settings"], result["data"]
    context = settings["seq_len"]
    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("budget", lambda r: r["label"] + ("" if r["trained"] else " (interp.)")),
        ("params", lambda r: human_count(r["params"])),
        ("ratio", lambda r: f"{r['param_ratio']:.3f}"),
        ("perplexity", lambda r: f"{r['perplexity']:.4f}"),
        ("bits/byte", lambda r: f"{r['bits_per_byte']:.4f}"),
        ("weights", lambda r: human_bytes(r["memory_bytes"]["weights"])),
        (f"cache@{context}", lambda r: human_bytes(r["memory_bytes"]["cache"])),
        ("tokens/s", lambda r: f"{r['tokens_per_second']:.0f}"),
        *_task_columns(result["rows"]),
    ]
    cells = [[header for header, _ in columns]] + [[fn(row) for _, fn in columns] for row in result["rows"]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    dtype = settings["dtype"] + (", bf16 autocast" if settings.get("bf16") else "")
    dtype += f" on {settings['device']}" if settings.get("device", "cpu") != "cpu" else ""
    title = (
        f"{result['model']} ({result['kind']}, {dtype}): {data['tokens']} tokens of "
        f"{data['source']}, windows of {context}"
    )
    return "\n".join([title, *lines])


def write_result(result: dict[str, Any], path: Path) -> None:
    """The result as JSON (non-finite numbers as null, which strict JSON readers accept)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    write_json(path, clean(result))


def plot(result: dict[str, Any], path: Path) -> None:
    """Perplexity (and task accuracies) against parameters, one labelled point per row.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    matplotlib = import_extra("matplotlib", "the eval plot")
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    rows = sorted(result["rows"], key=lambda r: r["params"])
    accuracies = sorted(
        {(t, m) for r in rows for t, ms in r.get("tasks", {}).items() for m in ms if m in ACCURACY_METRICS}
    )
    fig, axes = plt.subplots(1, 2 if accuracies else 1, figsize=(11 if accuracies else 6, 4.2), squeeze=False)
    params = [r["params"] / 1e6 for r in rows]
    ax = axes[0][0]
    ax.plot(params, [r["perplexity"] for r in rows], "o-", color="tab:blue")
    for x, r in zip(params, rows):
        ax.annotate(r["label"], (x, r["perplexity"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(
        xlabel="parameters (M)",
        ylabel="held-out perplexity",
        title=f"{model_name(result['model'])}: held-out perplexity",
    )
    ax.grid(alpha=0.3)
    if accuracies:
        ax = axes[0][1]
        for task, metric in accuracies:
            ys = [r.get("tasks", {}).get(task, {}).get(metric, float("nan")) for r in rows]
            ax.plot(params, ys, "o-", label=f"{task.removeprefix(TASK_PREFIX)} {metric}")
        ax.set(xlabel="parameters (M)", ylabel="accuracy", title="lm-eval tasks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


def write_report(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write eval.json and eval.png into `out_dir` (created if needed).

    Returns:
        {"json": path, "plot": path, or None when matplotlib is missing, "skipped": why there is no plot}.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    paths: dict[str, Any] = {"json": out / JSON_NAME, "plot": out / PLOT_NAME, "skipped": None}
    write_result(result, paths["json"])
    try:
        plot(result, paths["plot"])
    except MissingExtraError as err:  # the numbers do not need the plot: say so and go on
        paths["plot"], paths["skipped"] = None, str(err)
    return paths
