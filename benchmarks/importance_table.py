# SPDX-License-Identifier: Apache-2.0
"""Do the importance rankings pick the right units? Zero-shot perplexity of cut models, ranked vs random.

For one parent (any model path): score it on calibration text (width: one pass; depth: the iterative
normalized-MSE search limited to the drops the table needs), then cut it to 75% and 50% on one axis at a time
(hidden, MLP, attention heads, Mamba heads and head channels where present, depth) keeping

- the top-ranked units (the default scores; also the alternative MLP / attention scoring points), or
- random group-preserving orders of the same sizes (the baseline: the mean over `--random-draws` orders),

and for depth the iterative normalized-MSE order versus one-shot nMSE, Block Importance and a random order.
No retraining: this measures the ranking alone. Perplexity is on the packaged held-out text
(`--eval-data`: the packaged `nemotron_elastic.data.heldout_text()` or the default corpus' held-out split,
a fixed token budget), never on the calibration data.

Writes benchmarks/results/importance_<label>.json, then regenerates docs/importance.md from every
importance_*.json present (so a second model adds its own section; `--doc-only` just regenerates the doc).

    python benchmarks/importance_table.py --model smollm2 --label smollm2-135m --data DIR --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import RESULTS, machine, write_json

from nemotron_elastic.checkpoint import load_model
from nemotron_elastic.checkpoint.gguf import packaged_smollm2_gguf
from nemotron_elastic.data import heldout_text
from nemotron_elastic.data.calibration import read_documents, sample_windows, tokenize_documents
from nemotron_elastic.data.corpus import default_corpus
from nemotron_elastic.eval.perplexity import perplexity
from nemotron_elastic.importance import depth_ranking, random_ranking, reorder_model, width_ranking
from nemotron_elastic.io import load_tokenizer
from nemotron_elastic.subnet.uniform import spec_at_ratio, spec_drop_layers

RATIOS = (0.75, 0.5)
EVAL_DATA = {"packaged": "the packaged held-out text", "corpus": "the default corpus' held-out split"}
DEFAULT = {"mlp_point": "post", "attention_point": "head_output", "mamba_point": "out_proj_input"}
ALTERNATIVE = {"mlp_point": "pre", "attention_point": "o_proj_input", "mamba_point": "x"}  # paper / ModelOpt
POINT_NAMES = {"pre": "MLP pre-activation", "post": "MLP post-activation", "head_output": "attention head output",
               "o_proj_input": "attention o_proj input", "x": "Mamba in_proj x branch",
               "out_proj_input": "Mamba out_proj input"}
DOC = Path(__file__).resolve().parent.parent / "docs" / "importance.md"
# Two zero-shot perplexities closer than this (relative) are a tie: the evaluation is deterministic, so what
# separates them is float rounding (the tiny-hybrid's attention cuts differ by 1e-7) or a difference too small
# to matter; no finding is read from it.
TIE_REL = 0.01
AXIS_NAMES = {
    "hidden": "hidden channels",
    "mlp": "MLP neurons",
    "attention_heads": "attention heads",
    "mamba_heads": "Mamba heads",
    "mamba_head_dim": "Mamba head channels",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="native / HF folder, .gguf file, or 'smollm2' (the packaged GGUF)")
    ap.add_argument("--label", help="name in the results (default: the path's last part)")
    ap.add_argument("--data", help="calibration text: .txt / .jsonl / .parquet file or folder")
    ap.add_argument("--data-name", help="how the doc names the calibration data (default: the path)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--depth-samples", type=int, default=4)
    ap.add_argument("--depth-seq-len", type=int, default=128)
    ap.add_argument("--eval-tokens", type=int, default=2048, help="held-out tokens scored per perplexity")
    ap.add_argument("--eval-data", choices=("packaged", "corpus"), default="packaged",
                    help="held-out text: the packaged heldout_text() (default) or the default corpus' held-out "
                    "split (the distribution a parent pretrained on the default corpus was trained on)")
    ap.add_argument("--eval-seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random-draws", type=int, default=5,
                    help="random orders averaged for the baseline (seeds seed .. seed + N - 1)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for every forward (fp32 weights)")
    ap.add_argument(
        "--doc-only", action="store_true", help="only regenerate docs/importance.md from the JSONs"
    )
    args = ap.parse_args()
    if args.doc_only:
        print(f"wrote {write_doc()}")
        return
    if not args.model or not args.data:
        ap.error("--model and --data are required (unless --doc-only)")
    label = args.label or Path(args.model).name
    start = time.perf_counter()

    path = packaged_smollm2_gguf() if args.model == "smollm2" else args.model
    model, tokenizer = load_model(path), load_tokenizer(path)
    cfg = model.config
    stream = tokenize_documents(read_documents(args.data), tokenizer)
    width_ids = sample_windows(stream, args.samples, args.seq_len, args.seed)
    depth_ids = sample_windows(stream, args.depth_samples, args.depth_seq_len, args.seed)
    if args.eval_data == "packaged":
        heldout = tokenize_documents([heldout_text()], tokenizer)[: args.eval_tokens]
    else:
        heldout = tokenize_documents(default_corpus("heldout"), tokenizer)[: args.eval_tokens]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    kept_layers = {r: round(cfg.num_layers * r) for r in RATIOS}
    max_drops = cfg.num_layers - min(kept_layers.values())

    timings = {}
    t = time.perf_counter()
    with autocast:
        ranking = width_ranking(model, width_ids, 4, progress=True)
        alternative = width_ranking(model, width_ids, 4, **ALTERNATIVE)
        timings["width_scoring_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        depth = depth_ranking(model, depth_ids, max_drops, batch_size=args.depth_samples, progress=True)
        timings["depth_search_s"] = round(time.perf_counter() - t, 1)
    models = {
        "ranked": reorder_model(copy.deepcopy(model), ranking),
        "alternative": reorder_model(copy.deepcopy(model), alternative),
    }
    draws = [f"random{i}" for i in range(args.random_draws)]
    for i, name in enumerate(draws):  # the baseline is the mean over several random orders, not one draw
        models[name] = reorder_model(
            copy.deepcopy(model), random_ranking(cfg, torch.Generator().manual_seed(args.seed + i))
        )

    def ppl(which: str, spec=None) -> float:
        with autocast:
            value = perplexity(models[which], heldout, args.eval_seq_len, 4, subnet=spec)
        print(f"  {which:12s} {value:12.2f}", flush=True)
        return value

    t = time.perf_counter()
    rows = [{"axis": "none (parent)", "ratio": 1.0, "ranked": ppl("ranked")}]
    axes = ["hidden", "mlp", "attention_heads"] + (
        ["mamba_heads", "mamba_head_dim"] if "M" in cfg.pattern else []
    )
    for axis in axes:
        for ratio in RATIOS:
            spec = spec_at_ratio(cfg, ratio, (axis,))
            print(f"{axis} at {ratio}", flush=True)
            row = {"axis": axis, "ratio": ratio, "ranked": ppl("ranked", spec)}
            row |= _random_stats([ppl(name, spec) for name in draws])
            if axis in ("mlp", "attention_heads", "mamba_heads", "mamba_head_dim"):  # the other scoring point
                row["alternative"] = ppl("alternative", spec)
            rows.append(row)
    orders = {
        "ranked": depth.drop_order,
        "one_shot": depth.one_shot_order(),
        "block_importance": depth.block_importance_order(),
    }
    random_orders = [random_ranking(cfg, torch.Generator().manual_seed(args.seed + i)).depth.drop_order
                     for i in range(args.random_draws)]
    for ratio in RATIOS:
        num_drop = cfg.num_layers - kept_layers[ratio]
        print(f"depth at {ratio} (drop {num_drop})", flush=True)
        row = {"axis": "depth", "ratio": ratio}
        for name, order in orders.items():
            row[name] = ppl("ranked", spec_drop_layers(cfg, order, num_drop))  # layers: weights not permuted
        row |= _random_stats([ppl("ranked", spec_drop_layers(cfg, o, num_drop)) for o in random_orders])
        rows.append(row)
    timings["perplexity_s"] = round(time.perf_counter() - t, 1)
    timings["total_s"] = round(time.perf_counter() - start, 1)

    result = {
        "label": label,
        "command": "python " + shlex.join(sys.argv),
        "model": {"pattern": cfg.pattern, "hidden_size": cfg.hidden_size, "parameters": cfg.num_parameters()},
        "calibration": {
            "data": args.data_name or args.data,
            "data_tokens": stream.numel(),
            "samples": args.samples,
            "seq_len": args.seq_len,
            "depth_samples": args.depth_samples,
            "depth_seq_len": args.depth_seq_len,
            "seed": args.seed,
            "random_draws": args.random_draws,
        },
        "eval": {"tokens": heldout.numel(), "seq_len": args.eval_seq_len, "bf16": args.bf16, "data": args.eval_data},
        "scoring": {
            "default": DEFAULT,
            "alternative": ALTERNATIVE,
        },
        "depth": {
            "searched_steps": max_drops,
            "drop_order": depth.drop_order,
            "one_shot_order": orders["one_shot"],
            "block_importance_order": orders["block_importance"],
        },
        "rows": rows,
        "timings": timings,
        "machine": machine(),
    }
    write_json(f"importance_{label}.json", result)
    print(f"wrote {RESULTS / f'importance_{label}.json'} and {write_doc()}")


def _random_stats(values: list[float]) -> dict:
    """The baseline of one cut: mean perplexity over the random orders, and each draw's value."""
    return {"random": sum(values) / len(values), "random_draws": values}


# --- docs/importance.md ------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 1e5 else f"{value:.2e}"


def _scoring(r: dict, which: str) -> dict:
    """The scoring points of a run's ranked ("default") or "alternative" models, as recorded by that run."""
    return r["scoring"][which]


def _differs(a: float, b: float) -> bool:
    """a and b differ by more than TIE_REL of the smaller (otherwise a tie)."""
    return abs(a - b) > TIE_REL * min(a, b)


def _beats(ranked: float, random: float) -> str:
    """The "ranked < random" cell: yes, a tie (within TIE_REL) or no."""
    if not _differs(ranked, random):
        return "tie"
    return "yes" if ranked < random else "**no**"


def _random_cell(row: dict) -> str:
    draws = row.get("random_draws")
    if not draws or len(draws) < 2:
        return _fmt(row["random"])
    return f"{_fmt(row['random'])} ({_fmt(min(draws))}-{_fmt(max(draws))})"


def _model_section(r: dict) -> list[str]:
    cal, ev = r["calibration"], r["eval"]
    parent = next(row["ranked"] for row in r["rows"] if row["ratio"] == 1.0)
    lines = [
        f"## {r['label']}",
        "",
        (
            f"Pattern `{r['model']['pattern']}`, {r['model']['parameters'] / 1e6:.1f}M parameters. Calibration: "
            f"{cal['samples']} x {cal['seq_len']} tokens (width), {cal['depth_samples']} x {cal['depth_seq_len']} "
            f"(depth), seed {cal['seed']}, from `{cal['data']}` ({cal['data_tokens']:,} tokens). Evaluation: "
            f"{ev['tokens']:,} held-out tokens of {EVAL_DATA[ev.get('data', 'packaged')]}, windows of {ev['seq_len']}, bf16 autocast {'on' if ev['bf16'] else 'off'}. "
            f"Parent perplexity **{_fmt(parent)}**. Run time {r['timings']['total_s']:.0f} s "
            f"(width scoring {r['timings']['width_scoring_s']:.0f} s, depth search of {r['depth']['searched_steps']} "
            f"steps {r['timings']['depth_search_s']:.0f} s)."
        ),
        "",
        "    " + r["command"],
        "",
        (
            "Width: one axis cut at a time, the other axes whole. *ranked*: this run's default scores ("
            + ", ".join(POINT_NAMES[v] for v in _scoring(r, "default").values())
            + "); *alternative*: " + ", ".join(POINT_NAMES[v] for v in _scoring(r, "alternative").values()) + "."
        ),
        "",
        "| axis | kept | ranked | random: mean (min-max) | alternative scoring | ranked < random |",
        "|---|---|---|---|---|---|",
    ]
    losses, ties = [], []
    for row in r["rows"]:
        if row["axis"] in ("none (parent)", "depth"):
            continue
        beats = _beats(row["ranked"], row["random"])
        (losses if beats == "**no**" else ties if beats == "tie" else []).append(
            f"{AXIS_NAMES[row['axis']]} at {row['ratio']:.0%}")
        lines.append(
            f"| {AXIS_NAMES[row['axis']]} | {row['ratio']:.0%} | {_fmt(row['ranked'])} | {_random_cell(row)} | "
            f"{_fmt(row.get('alternative'))} | {beats} |"
        )
    lines += [
        "",
        "Depth: layers dropped by each order (the weights are the same).",
        "",
        "| kept layers | iterative nMSE (ranked) | one-shot nMSE | Block Importance | random: mean (min-max) | ranked < random |",
        "|---|---|---|---|---|---|",
    ]
    for row in (row for row in r["rows"] if row["axis"] == "depth"):
        beats = _beats(row["ranked"], row["random"])
        (losses if beats == "**no**" else ties if beats == "tie" else []).append(f"depth at {row['ratio']:.0%}")
        lines.append(
            f"| {row['ratio']:.0%} | {_fmt(row['ranked'])} | {_fmt(row['one_shot'])} | "
            f"{_fmt(row['block_importance'])} | {_random_cell(row)} | {beats} |"
        )
    lines += [
        "",
        (
            f"Iterative drop order: `{r['depth']['drop_order'][: r['depth']['searched_steps']]}`; "
            f"one-shot: `{r['depth']['one_shot_order'][: r['depth']['searched_steps']]}`; "
            f"Block Importance: `{r['depth']['block_importance_order'][: r['depth']['searched_steps']]}`."
        ),
        "",
        ("Ranked beats random on every axis and cut." if not losses and not ties
         else f"**Ranked does not beat random on: {', '.join(losses)}.**" if losses
         else f"Ranked beats random on every other axis and cut; a tie (within {TIE_REL:.0%}) on: {', '.join(ties)}."),
        "",
        *_findings(r),
    ]
    return lines


def _findings(r: dict) -> list[str]:
    """Comparisons between the scoring variants that the numbers of this run support (computed, not typed)."""
    notes = []
    for row in r["rows"]:
        name, kept = AXIS_NAMES.get(row["axis"], row["axis"]), f"{row['ratio']:.0%}"
        if "alternative" in row:
            key = {"mlp": "mlp_point", "attention_heads": "attention_point"}.get(row["axis"], "mamba_point")
            point = POINT_NAMES[_scoring(r, "alternative")[key]]
            if row["alternative"] < row["ranked"] and _differs(row["alternative"], row["ranked"]):
                notes.append(
                    f"{name} at {kept}: the alternative scoring ({point}) is better than the default "
                    f"({_fmt(row['alternative'])} vs {_fmt(row['ranked'])})."
                )
            if row["alternative"] > row["random"] and _differs(row["alternative"], row["random"]):
                notes.append(
                    f"{name} at {kept}: the alternative scoring ({point}) is worse than a random order "
                    f"({_fmt(row['alternative'])} vs {_fmt(row['random'])})."
                )
        if row["axis"] == "depth":
            for other, label in (("one_shot", "one-shot nMSE"), ("block_importance", "Block Importance")):
                if row[other] < row["ranked"] and _differs(row[other], row["ranked"]):
                    notes.append(
                        f"depth at {kept}: {label} is better than the iterative search "
                        f"({_fmt(row[other])} vs {_fmt(row['ranked'])})."
                    )
    ties = sum(
        not _differs(row[k], row["ranked"])
        for row in r["rows"] for k in ("alternative", "one_shot", "block_importance") if k in row
    )
    if ties:
        notes.append(
            f"{ties} other comparison{'s' if ties > 1 else ''} between scoring variants differ by less than "
            f"{TIE_REL:.0%} of the perplexity (ties: no finding is read from them)."
        )
    return [f"- {n}" for n in notes] + ([""] if notes else [])


def _speed_section() -> list[str]:
    path = RESULTS / "depth_speed.json"
    if not path.is_file():
        return []
    runs = json.loads(path.read_text())["runs"]
    lines = [
        "## Cost of the iterative depth search",
        "",
        (
            "`benchmarks/depth_speed.py` runs the fast search (cached prefix states + LM head through its Gram "
            "matrix, see `nemotron_elastic/importance/depth.py`) and the naive one (a whole forward per candidate) "
            "on the same model and batch in one run; both must find the same drop order."
        ),
        "",
        "| model | layers | batch | greedy steps | bf16 | naive s | fast s | naive / fast | same order |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs.values():
        lines.append(
            f"| {run['model']} | {run['num_layers']} | {run['samples']} x {run['seq_len']} | {run['greedy_steps']} | "
            f"{'yes' if run['bf16'] else 'no'} | {run['seconds_naive']:.1f} | {run['seconds_fast']:.1f} | "
            f"**{run['speedup_naive_over_fast']:.2f}x** | {'yes' if run['same_drop_order'] else 'NO'} |"
        )
    return lines + [""]


def write_doc() -> Path:
    """Regenerate docs/importance.md from every benchmarks/results/importance_*.json (and depth_speed.json)."""
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("importance_*.json"))]
    lines = [
        "# Importance rankings: do they pick the right units?",
        "",
        "<!-- Generated by benchmarks/importance_table.py (and depth_speed.py's JSON); do not edit by hand. -->",
        "Generated by `benchmarks/importance_table.py`; the command of each model's run is under its heading.",
        "",
        (
            "Zero-shot perplexity (no retraining) of the parent cut on one axis to 75% / 50%, keeping the units the "
            "rankings of `nemotron-elastic score` put first, versus a random group-preserving order of the same "
            "sizes. Lower is better. Depth compares the paper's iterative normalized MSE on the logits with its "
            "one-shot form, Block Importance (1 - cos) and a random order. Calibration text and evaluation text "
            "differ (each section names its held-out text)."
        ),
        "",
    ]
    for r in results:
        lines += _model_section(r)
    lines += _speed_section()
    lines += [
        "## Notes",
        "",
        (
            "- Units. Depth counts blocks, one mixer each (NemotronH's layout): SmolLM2's 30 decoder layers are 60 "
            "blocks, attention and MLP apart, so 50% depth drops 30 blocks. Attention heads are query heads, cut "
            "by the same count inside every KV group; Mamba heads inside every B/C group."
        ),
        (
            "- Default scoring points (`nemotron_elastic/importance/width.py`, `score --mlp-point / "
            "--attention-point / --mamba-point`): MLP post-activation (the down projection's input, as "
            "Model-Optimizer), attention head output (||W_o[:, h] y_h|| per token) and Mamba out_proj input (after "
            "the scan and the gate). The paper's points are one flag away: MLP pre-activation (`--mlp-point pre`; "
            "for a gated MLP the gate projection's output) and the Mamba in_proj x branch (`--mamba-point x`, also "
            "Model-Optimizer's). The defaults deviate from the paper because the paper's points rank worse on the "
            "models measured here (see the *alternative* columns; on the packaged held-out text, 3.5k tokens of "
            "another distribution, the x branch even ranked Mamba heads worse than random orders). The SmolLM2 section was run when `pre` was the default, so its *ranked* column is "
            "the paper's point and *alternative* the current default."
        ),
        (
            f"- Ties. The evaluation is deterministic (the same held-out tokens for every cut), so two "
            f"perplexities within {TIE_REL:.0%} of each other are reported as a tie, not as a finding: what separates "
            "them is float rounding (the tiny-hybrid's attention-head cuts differ by about 1e-7 between the two "
            "scoring points) or a difference too small to matter, and one evaluation sample says nothing about "
            "its sign on other text."
        ),
        (
            "- The random baseline is the mean over random group-preserving orders (seeds seed ... seed + draws - 1; "
            "older runs without `random_draws` used one order, seed 0), shown with the best and worst draw; "
            "every number is a zero-shot run without retraining. Run times are wall-clock "
            "on the machine of the run (its `machine` entry in the JSON), which may be shared with other jobs."
        ),
        "",
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(DOC)
    return DOC


if __name__ == "__main__":
    main()
