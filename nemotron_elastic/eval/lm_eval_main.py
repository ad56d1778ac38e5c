# SPDX-License-Identifier: Apache-2.0
"""lm-eval's command line with the `nemotron_elastic` model and the shipped tasks available.

    nemotron-elastic-lm-eval --model nemotron_elastic \\
        --model_args path=runs/elastic/model,budget=0.5 --tasks nemotron_heldout --limit 100
    python -m nemotron_elastic.eval.lm_eval_main ...        (the same)

Every argument is lm-eval's own (`lm_eval --help`). Why a wrapper: lm-evaluation-harness 0.4.13 finds
models in a fixed table (`lm_eval/models/__init__.py`, MODEL_MAPPING) and reads no plugin entry points,
so an external model exists only in a process that imported its module. This one imports ours, adds
the shipped task folder to every TaskManager it builds (also with a user's `--include_path`), then runs
lm-eval's CLI unchanged. Only when every requested task is a shipped one does it skip lm-eval's own
task index (`--include_path` or any other task name keeps it).
"""

from __future__ import annotations

import sys
from typing import Any

from ..io import MissingExtraError, import_extra

PURPOSE = "nemotron-elastic-lm-eval"  # what the missing-extra error says needs lm-eval


def requested_tasks(argv: list[str]) -> list[str] | None:
    """The task names of an lm-eval command line (`--tasks a,b` or `--tasks=a,b`), None without one."""
    for i, arg in enumerate(argv):
        if arg == "--tasks" and i + 1 < len(argv):
            return [t for t in argv[i + 1].split(",") if t]
        if arg.startswith("--tasks="):
            return [t for t in arg.split("=", 1)[1].split(",") if t]
    return None


def _with_shipped_tasks(shipped_only: bool) -> None:
    """Make `lm_eval.tasks.TaskManager` also scan TASKS_DIR (lm-eval's CLI imports it at call time).

    With `shipped_only` (every requested task is one of ours) lm-eval's own index of 14,000 task files
    is not scanned, which saves 10-25 s per run; any other task name brings it back.
    """
    tasks = import_extra("lm_eval.tasks", PURPOSE)

    from .lm_eval_tasks import TASKS_DIR  # deferred: lm-eval is an optional extra

    base = tasks.TaskManager
    if getattr(base, "_nemotron_elastic", False):
        base = base.__mro__[1]  # called twice in one process: wrap lm-eval's class, not our wrapper

    class TaskManager(base):  # type: ignore[misc, valid-type]
        _nemotron_elastic = True

        def __init__(self, *args: Any, include_path: Any = None, **kwargs: Any) -> None:
            paths = list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
            paths = [p for p in paths if p] + [str(TASKS_DIR)]
            if shipped_only and not [p for p in paths if p != str(TASKS_DIR)]:
                kwargs["include_defaults"] = False
            super().__init__(*args, include_path=paths, **kwargs)

    tasks.TaskManager = TaskManager


def main(argv: list[str] | None = None) -> None:
    """Run lm-eval's CLI on `argv` (default: sys.argv[1:]) with our model and tasks registered; without
    lm-eval installed, one `error:` line naming the extra and exit status 2."""
    try:
        cli_evaluate = import_extra("lm_eval.__main__", PURPOSE).cli_evaluate
    except MissingExtraError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    from . import lm_eval_model  # noqa: F401  (registers the model)
    from .lm_eval_tasks import SHIPPED_TAGS, SHIPPED_TASKS  # deferred with the model above

    argv = sys.argv[1:] if argv is None else list(argv)
    tasks = requested_tasks(argv)
    _with_shipped_tasks(tasks is not None and set(tasks) <= set(SHIPPED_TASKS) | set(SHIPPED_TAGS))
    # lm-eval's parser reads sys.argv itself (it inserts the legacy `run` subcommand there)
    sys.argv = ["nemotron-elastic-lm-eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
