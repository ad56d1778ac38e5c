# SPDX-License-Identifier: Apache-2.0
"""What the reproduction study reads off its runs: held-out perplexity per model and budget (at the
training context and a long one), learning curves from each run's metrics, zero-shot depth cuts with the
normalized-MSE and Block-Importance rankings, the family's size on disk (one elastic checkpoint versus
one exported checkpoint per budget), and where the trained router's own argmax lands next to its decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments import Plan


def _model_dir(folder: Path) -> Path:
    return folder / "model" if (folder / "model" / "config.yaml").is_file() else folder


def router_argmax_ratios(model_dir: Path) -> dict[str, float]:
    """{budget: parameter ratio of the router's row-wise argmax} for an elastic checkpoint: whether the
    router itself learned each budget, next to the decision within the budget that the checkpoint uses."""
    import torch

    from nemotron_elastic.checkpoint import load_model
    from nemotron_elastic.checkpoint.elastic import load_router
    from nemotron_elastic.router import to_spec

    router, config = load_router(model_dir), load_model(model_dir).config
    with torch.no_grad():
        return {f"{b:g}": to_spec(config, router.menus, router.logits(b)).param_count() / config.num_parameters()
                for b in router.budgets}


def _rows(path: Path, plan: Plan, seq: int, spec: dict | None = None) -> list[dict[str, Any]]:
    from nemotron_elastic.eval.runner import EvalSettings, evaluate_model

    settings = EvalSettings(seq_len=seq, batch_size=4, max_tokens=plan.eval_tokens)
    return evaluate_model(path, spec=spec, settings=settings)["rows"]


def evaluate_run(folder: Path, plan: Plan, progress: bool = False, specs: dict[float, dict] | None = None,
                 label: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """{context: {budget: {nll, perplexity, params, param_ratio}}} for every budget of a run (or `specs`
    cut from the model in `folder`); budgets spelled as f"{b:g}"; `label` names the row of a plain model.
    Cached in <folder>/study-eval.json."""
    cache = folder / "study-eval.json"
    key = {"contexts": [plan.seq_len, plan.long_seq], "tokens": plan.eval_tokens, "specs": specs}
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == json.loads(json.dumps(key)):
            return saved["eval"]
    path = _model_dir(folder)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for seq in (plan.seq_len, plan.long_seq):
        if specs is None:
            rows = [(label or f"{r['budget']:g}", r) for r in _rows(path, plan, seq)]
        else:
            rows = [(f"{b:g}", _rows(path, plan, seq, s)[0]) for b, s in specs.items()]
        result[str(seq)] = {label: {k: r[k] for k in ("nll", "perplexity", "params", "param_ratio")}
                            for label, r in rows}
    cache.write_text(json.dumps({"key": key, "eval": result}, indent=1) + "\n")
    return result


def learning_curve(folder: Path, plan: Plan) -> list[dict[str, Any]]:
    """Held-out metrics logged during training: [{step, tokens, <budget>: {kd, ce, ...} | ce}]."""
    from nemotron_elastic.train.run_dir import read_metrics

    per_step = plan.micro_batch * plan.grad_accum * plan.seq_len
    rows = [r for r in read_metrics(folder / "metrics.jsonl") if r["split"] == "eval"]
    return [{k: v for k, v in r.items() if k != "split"} | {"tokens": r["step"] * per_step} for r in rows]


def depth_rankings(scored: Path, calibration: Path, plan: Plan, max_drop: int = 3) -> dict[str, Any]:
    """Zero-shot held-out perplexity after dropping k = 1..max_drop layers in the order of the iterative
    normalized-MSE ranking (from ranking.json) versus Block Importance (1 - cosine, computed here)."""
    import torch

    from nemotron_elastic.checkpoint import load_model
    from nemotron_elastic.data.calibration import read_documents, sample_windows, tokenize_documents
    from nemotron_elastic.importance.depth import block_importance
    from nemotron_elastic.io import load_tokenizer
    from nemotron_elastic.subnet.uniform import spec_drop_layers

    model = load_model(scored)
    stream = tokenize_documents(read_documents(calibration), load_tokenizer(scored))
    windows = sample_windows(stream, max(2, plan.score_samples // 2), plan.seq_len, 0)
    bi = block_importance(model, windows)
    orders = {
        "nmse": [int(i) for i in json.loads((scored / "ranking.json").read_text())["depth"]["drop_order"]],
        "block_importance": [int(i) for i in torch.tensor(bi).argsort().tolist()],
    }
    drops = range(1, min(max_drop, model.config.num_layers - 1) + 1)
    out: dict[str, Any] = {"block_importance_scores": bi}
    for name, order in orders.items():
        ppl = {}
        for k in drops:
            spec = spec_drop_layers(model.config, order, k).to_dict()
            row = _rows(scored, plan, plan.seq_len, spec)[0]
            ppl[str(k)] = {"perplexity": row["perplexity"], "param_ratio": row["param_ratio"]}
        out[name] = {"order": order, "dropped": {str(k): sorted(order[:k]) for k in drops}, "cut": ppl}
    return out


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def family_memory(elastic_model: Path, exports: Path) -> dict[str, Any]:
    """Bytes on disk: the one elastic checkpoint (weights + router) versus one exported HF checkpoint per
    budget, and the parameter counts behind them."""
    from nemotron_elastic.export import export_subnet

    info = json.loads((elastic_model / "budgets.json").read_text())
    separate = {}
    for entry in info["budgets"]:
        label = f"{entry['budget']:g}"
        folder = exports / label
        if not (folder / "config.json").is_file():
            export_subnet(elastic_model, folder, budget=entry["budget"], overwrite=True)
        separate[label] = {"bytes": _weights_bytes(folder), "params": entry["params"]}
    elastic = _weights_bytes(elastic_model)
    total = sum(v["bytes"] for v in separate.values())
    return {"elastic_bytes": elastic, "separate": separate, "separate_bytes": total,
            "separate_over_elastic": total / elastic,
            "params_elastic": max(v["params"] for v in separate.values()),
            "params_separate": sum(v["params"] for v in separate.values())}
