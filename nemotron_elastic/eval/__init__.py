# SPDX-License-Identifier: Apache-2.0
"""Evaluation (docs/EVAL.md).

    perplexity.py      perplexity / per-token NLL of a token stream (windows, strides)
    texts.py           held-out token stream, passages and LAMBADA-style cloze items
    targets.py         which sub-models to evaluate (trained budgets, interpolation on request, specs)
    runner.py          `evaluate_model`: per-budget perplexity, bits/byte, params, memory, tokens/s, tasks
    report.py          terminal table, eval.json, eval.png
    lm_eval_model.py   the lm-eval model `nemotron_elastic` (registered on import)
    lm_eval_tasks.py   the shipped task folder (tasks/) and `run_tasks` over lm-eval's Python API
    lm_eval_main.py    `nemotron-elastic-lm-eval`: lm-eval's CLI with our model and tasks

Nothing is imported here: lm-eval and matplotlib load only when a command needs them.
"""
