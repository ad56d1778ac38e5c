# SPDX-License-Identifier: Apache-2.0
"""The shipped lm-eval tasks and running tasks through lm-eval's Python API.

    TASKS_DIR                 the folder of task YAMLs: nemotron_heldout_ppl, nemotron_heldout_cloze
                              (tag nemotron_heldout runs both); their data is built from the held-out
                              split when a task loads, so nothing is downloaded
    run_tasks(lm, ["nemotron_heldout_cloze"], limit=200)
                              lm_eval.simple_evaluate on an already built model -> {task: {metric: value}}

Any other lm-eval task name (hellaswag, arc_easy, ...) also works where its data is in the local
Hugging Face cache; only then is lm-eval's own task index (14,000 YAML files, about 10-25 s to scan)
read. Unknown names fail before any model work, with one line, and so does a missing lm-eval (the `eval`
extra; nothing here imports it before a task is asked for).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..io import import_extra

TASKS_DIR = Path(__file__).with_name("tasks")
SHIPPED_TASKS = ("nemotron_heldout_ppl", "nemotron_heldout_cloze")
SHIPPED_TAGS = ("nemotron_heldout",)
OWN_PREFIX = "nemotron_"
QUIET_LOGGERS = ("lm_eval", "lm-eval", "datasets")  # their INFO / WARNING lines would bury the table
PURPOSE = "eval --tasks"  # what the missing-extra error says needs lm-eval


def parse_tasks(text: str) -> list[str]:
    """'a,b' -> ['a', 'b'] (blanks dropped, order kept, repeats removed)."""
    tasks = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not tasks:
        raise ValueError("--tasks: no task given (e.g. --tasks nemotron_heldout_cloze)")
    return tasks


def task_manager(tasks: list[str], metadata: dict[str, Any] | None = None) -> Any:
    """An lm-eval TaskManager that knows the shipped tasks and, only when needed, lm-eval's own.

    Names that start with `nemotron_` are looked up among the shipped tasks only (a typo there should not
    cost a scan of lm-eval's index); any other name brings lm-eval's index in.

    Raises:
        ValueError: a task name that neither the shipped folder nor lm-eval knows (one line).
        MissingExtraError: lm-eval is not installed (one line naming the `eval` extra).
    """
    TaskManager = import_extra("lm_eval.tasks", PURPOSE).TaskManager

    own = set(SHIPPED_TASKS) | set(SHIPPED_TAGS)
    include_defaults = any(t not in own and not t.startswith(OWN_PREFIX) for t in tasks)
    manager = TaskManager(
        include_path=str(TASKS_DIR), include_defaults=include_defaults, metadata=metadata or {}
    )
    unknown = [t for t in tasks if not manager.match_tasks([t])]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(own), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(
            f"--tasks: unknown task {', '.join(unknown)} ({hint}shipped: {', '.join(SHIPPED_TASKS)}, "
            f"tag {SHIPPED_TAGS[0]}; `lm_eval ls tasks` lists lm-eval's)"
        )
    return manager


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def run_tasks(
    lm: Any,
    tasks: list[str],
    limit: int | None = None,
    data: str | os.PathLike | None = None,
    bootstrap_iters: int = 0,
    manager: Any = None,
) -> dict[str, dict[str, float]]:
    """Evaluate `lm` (an lm-eval LM, e.g. `NemotronElasticLM.from_model(...)`) on tasks.

    Args:
        lm: the model.
        tasks: task or tag names.
        limit: documents per task (None: all).
        data: documents for the shipped tasks instead of the held-out split.
        bootstrap_iters: lm-eval's bootstrap resamples for the standard errors of non-mean metrics
            (perplexities); 0 computes no standard errors at all (fast).
        manager: a TaskManager from `task_manager(tasks)` (built here when None).

    Returns:
        {task: {metric: value}}, with lm-eval's metric names stripped of their filter suffix
        (`acc,none` -> `acc`, `acc_stderr,none` -> `acc_stderr`).
    """
    lm_eval = import_extra("lm_eval", PURPOSE)
    metadata = {} if data is None else {"eval_data": str(data)}
    manager = manager or task_manager(tasks, metadata)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            limit=limit,
            task_manager=manager,
            bootstrap_iters=bootstrap_iters,
            log_samples=False,
            metadata=metadata,
        )
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out: dict[str, dict[str, float]] = {}
    for task, metrics in sorted(results["results"].items()):
        row = {}
        for key, value in metrics.items():
            number = _number(value)
            if number is not None and key != "alias":
                row[key.split(",")[0]] = number
        out[task] = row
    return out
