# SPDX-License-Identifier: Apache-2.0
"""Multi-process training (docs/DESIGN.md 3.8): 2 processes on CPU with gloo, launched as torchrun would (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), each with micro_batch 2, give the same losses, evaluations and
final weights as 1 process with micro_batch 4.

Same global batch by construction: `BlendDataset(rank, world_size)` hands rank r the r-th micro_batch of
each run of micro_batch * world_size windows, which is exactly the one process' batch of 4 split in two;
every rank draws the same budget and Gumbel noise at a micro-step, and the mean over ranks of per-rank
mean losses is the mean over the 4 rows (equal token counts).
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nemotron_elastic.checkpoint import load_model, save_native
from nemotron_elastic.checkpoint.elastic import load_router
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.run import PretrainConfig, TrainConfig
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.data.tokenizer import train_bpe
from nemotron_elastic.model import HybridLM
from nemotron_elastic.train.elastic import ElasticTrainer
from nemotron_elastic.train.fsdp import float32_params
from nemotron_elastic.train.pretrain import PretrainTrainer
from nemotron_elastic.train.run_dir import read_metrics
from nemotron_elastic.train.state import latest_checkpoint, read_full

WORKER = Path(__file__).with_name("dist_worker.py")
TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun. " * 6,
    "To be, or not to be, that is the question: whether tis nobler in the mind to suffer. " * 6,
    "A journey of a thousand miles begins with a single step, said the old man to the child. " * 6,
    "Rivers flow to the sea and the sea returns to the clouds, and the clouds to the rain. " * 6,
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, name: str, jobs: list[dict], nproc: int = 2, timeout: float = 300) -> str:
    """Run dist_worker.py as `nproc` ranks (the environment `torchrun --nproc_per_node` sets up); returns
    their output when a rank failed, else ""."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(jobs))
    env = dict(os.environ, WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[2]))
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(path)], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(nproc)
    ]
    deadline, logs = time.monotonic() + timeout, []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        logs.append(f"timed out after {timeout} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if all(p.returncode == 0 for p in procs):
        return ""
    return f"ranks exited {[p.returncode for p in procs]}\n" + "\n".join(logs)[-8000:]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    (root / "train.txt").write_text("\n\n".join(TEXT[:3]))
    (root / "train2.txt").write_text("\n\n".join(reversed(TEXT[:3])))
    (root / "held.txt").write_text(TEXT[3])
    tok = train_bpe(TEXT, 300)
    cfg = dataclasses.replace(get_preset("micro-hybrid"), vocab_size=len(tok))
    torch.manual_seed(0)
    model = HybridLM(cfg)
    model.init_weights()
    save_native(model, root / "parent", tokenizer=tok)
    # a parent whose full parameter shapes never equal a half (rows split over 2 ranks) of another one
    odd = dataclasses.replace(cfg, hidden_size=40, num_attention_heads=4, num_key_value_heads=1, head_dim=12,
                              intermediate_size=56, mamba_num_heads=6, mamba_head_dim=6, ssm_state_size=8)
    model = HybridLM(odd)
    model.init_weights()
    save_native(model, root / "parent-odd", tokenizer=tok)
    return root


def elastic_config(root: Path, out: str, micro_batch: int, dist: str | dict = "ddp") -> dict:
    stage = {"seq_len": 16, "micro_batch": micro_batch, "grad_accum": 2}
    return {
        "parent": str(root / "parent"), "out": str(root / out), "budgets": [1.0, 0.5],
        "menus": {"hidden": [1.0, 0.75, 0.5], "mlp": [1.0, 0.5], "mamba_heads": [1.0, 0.5],
                  "per_layer": ["mlp"]},
        "stages": [{"name": "s1", "steps": 3, **stage},
                   {"name": "s2", "steps": 3, **stage, "seq_len": 24, "budget_weights": [0.7, 0.3]}],
        "data": {"train": str(root / "train.txt"), "heldout": str(root / "held.txt"), "eval_tokens": 64},
        "log_every": 2, "eval_every": 3, "save_every": 2, "bf16": False, "dist": dist,
    }


def global_config(root: Path, out: str, dist: dict | str = "ddp") -> dict:
    """A run sized by `global_batch` (4 sequences per step, 2 budget draws of 2 sequences each): the same
    run on 1 or 2 processes, which may stop on one and resume on the other. It trains on a 70/30 blend of two
    raw files (prepared on the fly by rank 0), so equal runs also show the blend's global sequence stream to be
    the same at every world size and across a resume."""
    cfg = elastic_config(root, out, 1, "ddp")
    for stage in cfg["stages"]:
        del stage["grad_accum"]
        stage.update(global_batch=4, budget_draws=2)
    cfg["data"]["train"] = [{"path": str(root / "train.txt"), "weight": 0.7},
                            {"path": str(root / "train2.txt"), "weight": 0.3}]
    return {**cfg, "dist": dist}


def pretrain_config(root: Path, out: str, micro_batch: int, preset: str = "micro-hybrid") -> dict:
    return {
        "preset": preset, "model": {"vocab_size": 300}, "tokenizer": str(root / "parent"),
        "out": str(root / out), "data": {"train": str(root / "train.txt"), "heldout": str(root / "held.txt"),
                                         "eval_tokens": 64},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "stages": [{"name": "pretrain", "steps": 4, "seq_len": 16, "micro_batch": micro_batch,
                    "grad_accum": 2}],
        "log_every": 1, "eval_every": 2, "save_every": 100, "bf16": False,
    }


def rows(out: Path, split: str) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == split]


def assert_same_run(single: Path, multi: Path, keys: tuple[str, ...], weight_atol: float = 1e-6) -> None:
    """The logged training and eval metrics and the final weights agree to fp32 rounding.

    Splitting a batch changes the summation order (differences of ~1e-7 at step 1), and Adam turns the
    rounding noise of near-zero gradients into lr-sized steps, so after a few steps the gradient norm
    differs by up to ~2e-5; losses stay within 1e-5 (absolute 1e-6: the full budget's KD starts near 0).
    Weights: `weight_atol` (pretraining's lr 3e-3 is 30x the elastic one, and so is the noise it moves).
    """
    a, b = rows(single, "train"), rows(multi, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] and a
    for ra, rb in zip(a, b):
        for key in ra:
            if key.endswith(keys):
                rel = 1e-4 if key == "grad_norm" else 1e-5
                assert rb[key] == pytest.approx(ra[key], rel=rel, abs=1e-6), (ra["step"], key)
    assert rows(single, "eval") and json.dumps(rows(single, "eval"))  # logged
    for ea, eb in zip(rows(single, "eval"), rows(multi, "eval")):
        assert ea["step"] == eb["step"]
        flat_a, flat_b = json.loads(json.dumps(ea)), json.loads(json.dumps(eb))
        for k, v in flat_a.items():
            if isinstance(v, dict):
                for m in ("kd", "ce"):
                    # abs: the full budget's KD after a few steps is ~1e-6, at the level of rounding noise
                    assert flat_b[k][m] == pytest.approx(v[m], rel=1e-5, abs=1e-7), (ea["step"], k, m)
            elif k == "ce":
                assert flat_b[k] == pytest.approx(v, rel=1e-5)
    wa, wb = load_model(single / "model").state_dict(), load_model(multi / "model").state_dict()
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=weight_atol, msg=k)


@pytest.fixture(scope="module")
def runs(root):
    """Every 2-rank run, in one launch (imports dominate a tiny run); the 1-process references."""
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("someone else's folder")
    (root / "errors").mkdir()
    (root / "allocations" / "fsdp").mkdir(parents=True)
    (root / "allocations" / "ddp").mkdir()
    (root / "disagree").mkdir()
    jobs = {
        # under fsdp the models are built on the meta device and each rank reads only its shards
        "allocations": {"kind": "allocations", "config": {**elastic_config(root, "alloc", 2, "fsdp"),
                                                          "parent": str(root / "parent-odd")},
                        "out": str(root / "allocations" / "fsdp")},
        # the control: ddp holds whole models on every rank, and the same check sees them
        "allocations-ddp": {"kind": "allocations", "config": {**elastic_config(root, "alloc-ddp", 2, "ddp"),
                                                              "parent": str(root / "parent-odd")},
                            "out": str(root / "allocations" / "ddp")},
        # rank 0 refuses the output folder: every rank must raise instead of waiting for it
        "refused": {"kind": "elastic", "config": elastic_config(root, "not-a-run", 2),
                    "report": str(root / "errors")},
        # with the debug check that every rank runs the same sub-model at every micro-step
        "ddp": {"kind": "elastic", "config": {**elastic_config(root, "ddp", 2, "ddp"), "check_decisions": True}},
        "disagree": {"kind": "disagree", "out": str(root / "disagree")},
        # FSDP2 (student and frozen teacher sharded), stopped after step 3 (half-way through a log
        # window), resumed by a new trainer from the gathered checkpoint
        "fsdp": {"kind": "elastic", "config": elastic_config(root, "fsdp", 2, "fsdp"), "stop_at": 3},
        "pre-ddp": {"kind": "pretrain", "config": {**pretrain_config(root, "pre-ddp", 2), "dist": "ddp"}},
        # tied embeddings (the LM head is the embedding table) under FSDP, with a resume
        "pre-fsdp": {"kind": "pretrain", "config": {**pretrain_config(root, "pre-fsdp", 2, "micro-llama"),
                                                    "dist": "fsdp"}, "stop_at": 2},
        # bf16 mixed precision (parameters all-gathered in bfloat16, gradients reduced in float32)
        "fsdp-bf16": {"kind": "elastic", "config": {**elastic_config(root, "fsdp-bf16", 2, "fsdp"), "bf16": True}},
        # world-size invariance: 2 processes straight, 2 stopped (resumed by 1 below), 2 resuming 1's stop
        "gb-two": {"kind": "elastic", "config": global_config(root, "gb-two", "fsdp")},
        # stopped at step 3, half-way through a log window: the resumed run completes the window
        "gb-two-stop": {"kind": "elastic", "config": global_config(root, "gb-two-stop", "fsdp"), "stop_at": 3,
                        "then": "stop"},
        "gb-one-stop": {"kind": "elastic", "config": global_config(root, "gb-one-stop", "fsdp"), "stop_at": 4,
                        "resume": True},
    }
    one_stop = from_dict(TrainConfig, global_config(root, "gb-one-stop", "fsdp"))
    assert ElasticTrainer(one_stop, progress=False).fit(stop_at=4) is None  # resumed by 2 processes
    failure = launch(root, "jobs", list(jobs.values()))
    # HSDP: 4 processes, shards within pairs, replicas across them; micro_batch 1 x 4 ranks = the single 4
    hsdp = elastic_config(root, "hsdp", 1, {"strategy": "fsdp", "shard_size": 2})
    hsdp_bf16 = {**elastic_config(root, "hsdp-bf16", 1, {"strategy": "fsdp", "shard_size": 2}), "bf16": True}
    (root / "shard-3").mkdir()
    bad_shards = {**elastic_config(root, "bad-shards", 1, {"strategy": "fsdp", "shard_size": 3})}
    failure += launch(root, "hsdp", [{"kind": "elastic", "config": hsdp}, {"kind": "elastic", "config": hsdp_bf16},
                                     {"kind": "elastic", "config": bad_shards, "report": str(root / "shard-3")}],
                      nproc=4)
    # rank 1 dies while it writes checkpoint 4: rank 0 fails on the collective timeout, not hanging
    die = global_config(root, "died", {"strategy": "fsdp", "timeout_minutes": 0.25})
    (root / "died-report").mkdir()
    launch(root, "died", [{"kind": "elastic", "config": die, "die_in_save": 1, "die_in_save_step": 4,
                           "report": str(root / "died-report")}])
    ElasticTrainer(from_dict(TrainConfig, global_config(root, "gb-one")), progress=False).fit()
    ElasticTrainer(from_dict(TrainConfig, {**elastic_config(root, "single-bf16", 4), "bf16": True}),
                   progress=False).fit()
    ElasticTrainer(from_dict(TrainConfig, elastic_config(root, "single", 4)), progress=False).fit()
    PretrainTrainer(from_dict(PretrainConfig, pretrain_config(root, "pre-single", 4)), progress=False).fit()
    llama = pretrain_config(root, "pre-single-llama", 4, "micro-llama")
    PretrainTrainer(from_dict(PretrainConfig, llama), progress=False).fit()
    return failure


def finished(root: Path, name: str, failure: str, params: str) -> Path:
    """The output folder of a 2-rank run that finished, training parameters of type `params`."""
    out = root / name
    if not (out / "done").is_file():
        pytest.fail(f"the 2-rank run {name!r} did not finish:\n{failure}")
    assert (out / "done").read_text() == params
    return out


def test_a_failure_on_rank_0_reaches_every_rank(root, runs):
    finished(root, "ddp", runs, "Parameter")  # the launch went on after the failed job
    assert "FileExistsError: " in (root / "errors" / "rank0.txt").read_text()
    assert "FileExistsError: " in (root / "errors" / "rank1.txt").read_text()
    assert "(raised on rank 0)" in (root / "errors" / "rank1.txt").read_text()


ELASTIC_KEYS = ("/kd", "/loss", "/budget_loss", "/cost_ratio", "grad_norm")


def assert_same_router(single: Path, multi: Path) -> None:
    """The router (replicated in both modes, its gradients all-reduced by hand) ends the same."""
    ra, rb = load_router(single / "model").state_dict(), load_router(multi / "model").state_dict()
    for k, v in ra.items():
        torch.testing.assert_close(rb[k], v, rtol=1e-5, atol=1e-6, msg=k)


def assert_same_checkpoint(single: Path, multi: Path) -> None:
    """The last checkpoints hold the same tensors (read whole from the rank files), optimizer groups, data
    position and RNG states, whatever the world size and strategy wrote them."""
    a, b = single / "checkpoints" / "step-0000004", multi / "checkpoints" / "step-0000004"
    sa, sb = json.loads((a / "state.json").read_text()), json.loads((b / "state.json").read_text())
    assert (sa["step"], sa["param_groups"], sa["data"]) == (sb["step"], sb["param_groups"], sb["data"])
    assert sa["tensors"] == sb["tensors"]
    ta, tb = read_full(a), read_full(b)
    assert ta.keys() == tb.keys() and any(k.startswith("optim/") for k in ta)
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], rtol=1e-5, atol=1e-6, msg=k)
    ra, rb = load_file(str(a / "rng.safetensors")), load_file(str(b / "rng.safetensors"))
    assert all(torch.equal(ra[k], rb[k]) for k in ra)


def test_ddp_elastic_matches_one_process(root, runs):
    out = finished(root, "ddp", runs, "Parameter")
    assert_same_run(root / "single", out, ELASTIC_KEYS)
    assert_same_router(root / "single", out)
    assert_same_checkpoint(root / "single", out)


def test_fsdp_elastic_with_resume_matches_one_process(root, runs):
    out = finished(root, "fsdp", runs, "DTensor")
    assert_same_run(root / "single", out, ELASTIC_KEYS)
    assert_same_router(root / "single", out)
    assert_same_checkpoint(root / "single", out)


def test_ddp_pretrain_matches_one_process(root, runs):
    out = finished(root, "pre-ddp", runs, "Parameter")
    assert_same_run(root / "pre-single", out, ("loss", "grad_norm"), weight_atol=1e-5)


def test_fsdp_pretrain_tied_with_resume_matches_one_process(root, runs):
    out = finished(root, "pre-fsdp", runs, "DTensor")
    assert_same_run(root / "pre-single-llama", out, ("loss", "grad_norm"), weight_atol=1e-5)
    assert load_model(out / "model").config.tie_word_embeddings


def test_fsdp_never_materialises_a_whole_model(root, runs):
    """While an fsdp trainer builds the student and the teacher, no rank allocates a tensor with the full
    shape of any parameter that sharding splits (rows >= 2), only its half; under ddp (the control) the
    same record shows the whole parameters."""
    parent = load_model(root / "parent-odd")
    whole = float32_params(parent)  # Mamba A_log / D / dt_bias and norm weights: kept whole (train/fsdp.py)
    split = {tuple(p.shape) for p in parent.parameters() if p.dim() and p.shape[0] >= 2 and p not in whole}
    assert not split & {tuple(p.shape) for p in whole}
    halves = {(-(-s[0] // 2), *s[1:]) for s in split}
    assert not split & halves  # the parent is built so that the two cannot be confused

    def allocated(kind: str, rank: int) -> set[tuple]:
        path = root / "allocations" / kind / f"rank{rank}.json"
        if not path.is_file():
            pytest.fail(f"the {kind} allocations job did not finish:\n{runs}")
        return {tuple(shape) for shape, _ in json.loads(path.read_text())}

    for rank in (0, 1):
        fsdp = allocated("fsdp", rank)
        assert not fsdp & split, sorted(fsdp & split)
        assert halves <= fsdp  # each rank allocated its shards
        assert split <= allocated("ddp", rank)


def test_ranks_that_disagree_on_the_sub_model_fail_instead_of_hanging(root, runs):
    for rank in (0, 1):
        text = (root / "disagree" / f"rank{rank}.txt").read_text()
        assert text == f"RuntimeError: the sub-model of budget 1: the ranks disagree (rank {rank} has rank {rank})"


def assert_close_bf16(single: Path, multi: Path) -> None:
    a, b = rows(single, "train"), rows(multi, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] and a
    for ra, rb in zip(a, b):
        for key in ra:
            if key.endswith(("/kd", "/loss")):
                assert rb[key] == pytest.approx(ra[key], rel=2e-2, abs=2e-3), (ra["step"], key)
    model = load_model(multi / "model")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32


def test_fsdp_bf16_mixed_precision_follows_one_process(root, runs):
    """bf16 policy vs one process under bf16 autocast. Both run every matmul in bfloat16; FSDP also rounds the
    weights, the residual stream and the embedding output to bfloat16 (8-bit mantissa, relative rounding
    2^-9 = 2e-3) where autocast keeps them float32, so the losses agree to about that: rel 2e-2 leaves
    10x room for the rounding to accumulate over 12 layers of tiny width, and A_log / D / dt_bias / norms
    stay float32 (replicated) on both sides."""
    assert_close_bf16(root / "single-bf16", finished(root, "fsdp-bf16", runs, "DTensor"))


def test_hsdp_four_processes_match_one_process(root, runs):
    """Shards within pairs of ranks, replicas across the pairs: fp32 within 1e-5 of one process, bf16 as
    close as the 2-process bf16 run."""
    out = finished(root, "hsdp", runs, "DTensor")
    assert_same_run(root / "single", out, ELASTIC_KEYS)
    assert_same_router(root / "single", out)
    assert_close_bf16(root / "single-bf16", finished(root, "hsdp-bf16", runs, "DTensor"))


def test_a_shard_size_that_does_not_divide_the_world_fails_on_every_rank(root, runs):
    for rank in range(4):
        text = (root / "shard-3" / f"rank{rank}.txt").read_text()
        assert text == "ValueError: dist.shard_size: 3 does not divide the world size 4\n"
    assert not (root / "bad-shards").exists()  # refused before anything was written


def assert_same_continuation(straight: Path, resumed: Path) -> None:
    """Same budgets (metric keys) and Gumbel decisions (cost ratios) at every logged step, and losses within
    1e-6 (absolute, or relative for values above 1): another world size sums the same gradients in another
    order, so the runs agree to float32 rounding, not bit for bit; the full budget's KD (~2e-4 here) then
    moves in its 5th digit."""
    a, b = rows(straight, "train"), rows(resumed, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) == 3
    for ra, rb in zip(a, b):
        assert sorted(k for k in ra if "/" in k) == sorted(k for k in rb if "/" in k), ra["step"]  # budgets
        for key in ra:
            if key.endswith(("/kd", "/loss", "/budget_loss", "/cost_ratio", "/decision_ratio")):
                assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-6), (ra["step"], key)
    wa, wb = load_model(straight / "model").state_dict(), load_model(resumed / "model").state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)


def test_saved_by_two_processes_resumed_by_one(root, runs):
    stopped = root / "gb-two-stop"
    assert latest_checkpoint(stopped).name == "step-0000003"
    assert len(list(latest_checkpoint(stopped).glob("rank-*.safetensors"))) == 2
    ElasticTrainer(from_dict(TrainConfig, global_config(root, "gb-two-stop", "fsdp")), resume=True,
                   progress=False).fit()
    assert_same_continuation(finished(root, "gb-two", runs, "DTensor"), stopped)


def test_saved_by_one_process_resumed_by_two(root, runs):
    out = finished(root, "gb-one-stop", runs, "DTensor")
    assert_same_continuation(root / "gb-one", out)
    assert_same_continuation(root / "gb-one", root / "gb-two")  # the world size does not change the run


def test_grad_accum_runs_refuse_to_resume_on_another_world_size(root, runs):
    cfg = from_dict(TrainConfig, elastic_config(root, "fsdp", 2, "fsdp"))
    run = root / "fsdp-copy"
    import shutil

    shutil.copytree(root / "fsdp", run)
    (run / "model").rename(run / "model-done")  # not finished: a checkpoint to resume
    with pytest.raises(ValueError, match=r"stages\[0\]: saved by 2 processes, resumed by 1"):
        ElasticTrainer(dataclasses.replace(cfg, out=str(run)), resume=True, progress=False).fit()


def test_a_rank_killed_mid_save_leaves_the_previous_checkpoint(root, runs):
    """Rank 1 exits while writing checkpoint 4; rank 0 fails on the 15 s collective timeout instead of
    hanging; checkpoint 2 is intact and one process resumes it to the uninterrupted run's end."""
    report = (root / "died-report" / "rank0.txt").read_text()
    assert report.split(":")[0] in ("RuntimeError", "DistBackendError"), report
    run = root / "died"
    assert latest_checkpoint(run).name == "step-0000002"
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # the torn write
    ElasticTrainer(from_dict(TrainConfig, global_config(root, "died")), resume=True, progress=False).fit()
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert_same_continuation(root / "gb-one", run)
