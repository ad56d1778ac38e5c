# SPDX-License-Identifier: Apache-2.0
"""The elastic trainer end to end on a micro parent: output folder, exact resume, atomic checkpoints,
bad input refused before training."""

import dataclasses
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nemotron_elastic.checkpoint import load_model, save_native
from nemotron_elastic.checkpoint.elastic import budget_spec, load_router
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.run import TrainConfig
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.data.tokenizer import train_bpe
from nemotron_elastic.model import HybridLM
from nemotron_elastic.train import state as state_mod
from nemotron_elastic.train.elastic import ElasticTrainer
from nemotron_elastic.train.run_dir import read_metrics

TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun. " * 6,
    "To be, or not to be, that is the question: whether tis nobler in the mind to suffer. " * 6,
    "A journey of a thousand miles begins with a single step, said the old man to the child. " * 6,
    "Rivers flow to the sea and the sea returns to the clouds, and the clouds to the rain. " * 6,
]


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("elastic")
    (root / "train.txt").write_text("\n\n".join(TEXT[:3]))
    (root / "held.txt").write_text(TEXT[3])
    tok = train_bpe(TEXT, 300)
    cfg = dataclasses.replace(get_preset("micro-hybrid"), vocab_size=len(tok))
    torch.manual_seed(0)
    model = HybridLM(cfg)
    model.init_weights()
    save_native(model, root / "parent", tokenizer=tok)
    return root


def config(root, out="run", **over):
    data = {
        "parent": str(root / "parent"),
        "out": str(root / out),
        "budgets": [1.0, 0.5],
        "menus": {"hidden": [1.0, 0.75, 0.5], "mlp": [1.0, 0.5], "mamba_heads": [1.0, 0.5], "per_layer": ["mlp"]},
        "stages": [
            {"name": "s1", "steps": 4, "seq_len": 16, "micro_batch": 2, "grad_accum": 2},
            {"name": "s2", "steps": 4, "seq_len": 24, "micro_batch": 2, "grad_accum": 2, "budget_weights": [0.7, 0.3]},
        ],
        "data": {"train": str(root / "train.txt"), "heldout": str(root / "held.txt"), "eval_tokens": 64},
        "log_every": 2, "eval_every": 4, "save_every": 2, "bf16": False, "deterministic": True,
    }
    data.update(over)
    return from_dict(TrainConfig, data)


def train_rows(path):
    return [r for r in read_metrics(path / "metrics.jsonl") if r["split"] == "train"]


def test_train_writes_a_complete_elastic_checkpoint(parent_dir):
    info = ElasticTrainer(config(parent_dir), progress=False).fit()
    out = parent_dir / "run" / "model"
    assert {b["budget"] for b in info["budgets"]} == {1.0, 0.5}
    model = load_model(out)
    router = load_router(out)
    assert router.budgets == [1.0, 0.5]
    for b in (1.0, 0.5):
        spec = budget_spec(out, b, model.config)
        assert spec.param_count() <= model.config.num_parameters()
    assert budget_spec(out, 1.0, model.config).is_within(SubnetSpecFull(model.config))
    # the default decision lands every budget within the dead zone, trained and interpolated alike, and
    # every training step's sampled sub-model too
    budgets = json.loads((out / "budgets.json").read_text())
    assert budgets["decision"] == "within_budget"
    for entry in budgets["budgets"]:
        assert abs(entry["param_ratio"] / entry["budget"] - 1) <= 0.05, entry
    full = model.config.num_parameters()
    assert abs(budget_spec(out, 0.75, model.config).param_count() / full / 0.75 - 1) <= 0.05
    rows = train_rows(parent_dir / "run")
    assert rows and all("1/kd" in r or "0.5/kd" in r for r in rows)
    for r in rows:
        for b in ("1", "0.5"):
            if f"{b}/decision_ratio" in r:
                assert abs(r[f"{b}/decision_ratio"] / float(b) - 1) <= 0.05, r
    evals = [r for r in read_metrics(parent_dir / "run" / "metrics.jsonl") if r["split"] == "eval"]
    assert evals and set(evals[-1]) >= {"1", "0.5"}
    # the same scalars in TensorBoard, per budget
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(parent_dir / "run" / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/0.5/kd", "train/1/kd", "train/0.5/decision_ratio", "eval/0.5/ppl", "train/tau"} <= tags
    logged = sorted((e.step, e.value) for e in events.Scalars("train/0.5/kd"))
    expected = sorted((r["step"], r["0.5/kd"]) for r in rows if "0.5/kd" in r)
    assert [s for s, _ in logged] == [s for s, _ in expected] and logged
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)  # float32 in events


def SubnetSpecFull(cfg):
    from nemotron_elastic.config.spec import SubnetSpec

    return SubnetSpec.full(cfg)


def test_resume_gives_the_same_losses(parent_dir):
    ElasticTrainer(config(parent_dir, "straight"), progress=False).fit()
    assert ElasticTrainer(config(parent_dir, "stopped"), progress=False).fit(stop_at=4) is None
    ElasticTrainer(config(parent_dir, "stopped"), resume=True, progress=False).fit()
    a, b = train_rows(parent_dir / "straight"), train_rows(parent_dir / "stopped")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ra:
            if key.endswith(("/kd", "/loss", "/budget_loss")):
                assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    wa = load_model(parent_dir / "straight" / "model").state_dict()
    wb = load_model(parent_dir / "stopped" / "model").state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_checkpoint_killed_mid_write_keeps_the_previous_one(parent_dir, monkeypatch):
    trainer = ElasticTrainer(config(parent_dir, "killed"), progress=False)
    trainer.fit(stop_at=2)
    first = state_mod.latest_checkpoint(parent_dir / "killed")
    assert first is not None and first.name.endswith("2")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(state_mod, "write_tensors", boom)
    with pytest.raises(KeyboardInterrupt):
        ElasticTrainer(config(parent_dir, "killed"), resume=True, progress=False).fit(stop_at=4)
    assert state_mod.latest_checkpoint(parent_dir / "killed") == first
    assert json.loads((first / "state.json").read_text())["step"] == 2
    leftovers = [p.name for p in (parent_dir / "killed" / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers


@pytest.mark.parametrize(
    "over, error, match",
    [
        ({"budgets": [1.0, 1.5]}, ValueError, "budgets"),
        ({"budgets": [1.0, 0.1]}, ValueError, "no sub-model of these menus costs within 5% of budget 0.1"),
        ({"router": {"dead_zone": 0.0}}, ValueError, "router.dead_zone: 0 leaves no sub-model"),
        ({"menus": {"mamba_heads": [1.0, 3]}}, ValueError, "multiple of 2"),
        ({"menus": {"depth": [0, 1]}}, ValueError, "ranking.json"),
        ({"parent": "/nonexistent/parent"}, FileNotFoundError, "nonexistent"),
    ],
)
def test_bad_input_fails_before_training(parent_dir, over, error, match):
    with pytest.raises(error, match=match):
        ElasticTrainer(config(parent_dir, "bad", **over), progress=False)
    assert not (parent_dir / "bad" / "metrics.jsonl").exists()


def test_resume_folder_from_another_config_is_refused(parent_dir):
    ElasticTrainer(config(parent_dir, "other"), progress=False).fit(stop_at=2)
    with pytest.raises(ValueError, match="another config"):
        ElasticTrainer(config(parent_dir, "other", seed=7), resume=True, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        ElasticTrainer(config(parent_dir, "other"), progress=False)


def test_step_zero_is_evaluated(parent_dir):
    ElasticTrainer(config(parent_dir, "zero"), progress=False).fit()
    evals = [r for r in read_metrics(parent_dir / "zero" / "metrics.jsonl") if r["split"] == "eval"]
    assert evals[0]["step"] == 0 and set(evals[0]) >= {"1", "0.5"}


def test_fixed_specs_train_only_the_given_sub_model(parent_dir):
    """`specs:` trains the given sub-model by KD (the Minitron route): weights outside it stay as in the
    parent, the router is untouched, budgets.json records the spec, and no other budget can be asked."""
    from nemotron_elastic.config.spec import SubnetSpec
    from nemotron_elastic.subnet.uniform import spec_at_ratio

    parent = load_model(parent_dir / "parent")
    spec = spec_at_ratio(parent.config, 0.5, axes=("mlp",))
    path = parent_dir / "half.json"
    path.write_text(json.dumps(spec.to_dict()))
    trainer = ElasticTrainer(config(parent_dir, "fixed", budgets=[0.5], specs=[str(path)],
                                    stages=[{"name": "s1", "steps": 4, "seq_len": 16, "micro_batch": 2,
                                             "grad_accum": 2}]), progress=False)
    router_before = {k: v.clone() for k, v in trainer.router.state_dict().items()}
    info = trainer.fit()
    assert info["fixed_specs"] and info["budgets"][0]["spec"] == spec.to_dict()
    out = parent_dir / "fixed" / "model"
    assert budget_spec(out, 0.5) == SubnetSpec.from_dict(spec.to_dict(), parent.config)
    with pytest.raises(ValueError, match="fixed specs"):
        budget_spec(out, 0.75)
    trained = load_model(out).state_dict()
    base = parent.state_dict()
    mlp = spec.to_dict()["mlp"]
    cut = mlp if isinstance(mlp, int) else mlp[0]
    name = next(k for k in base if k.endswith("up_proj.weight"))  # (mlp, hidden): rows past the cut unused
    assert torch.equal(trained[name][cut:], base[name][cut:])
    assert not torch.equal(trained[name][:cut], base[name][:cut])
    assert all(torch.equal(router_before[k], v) for k, v in load_router(out).state_dict().items())


def test_fixed_specs_bad_input(parent_dir, tmp_path):
    with pytest.raises(ValueError, match="one spec file per budget"):
        config(parent_dir, "bad", specs=[str(tmp_path / "a.json")])
    (tmp_path / "a.json").write_text(json.dumps({"mlp": [10**6]}))
    one_stage = [{"name": "s1", "steps": 2, "seq_len": 16, "micro_batch": 2, "grad_accum": 1}]
    with pytest.raises(ValueError, match=r"a\.json: subnet\.mlp"):
        ElasticTrainer(config(parent_dir, "bad", budgets=[0.5], specs=[str(tmp_path / "a.json")], stages=one_stage),
                       progress=False)
    assert not (parent_dir / "bad").exists()


# --- activation checkpointing, resume hygiene, failed starts ---------------------------------------------


def test_activation_checkpointing_gives_the_same_run(parent_dir):
    short = {"stages": [{"name": "s1", "steps": 3, "seq_len": 16, "micro_batch": 2, "grad_accum": 2}],
             "log_every": 1, "eval_every": 3, "save_every": 3}
    ElasticTrainer(config(parent_dir, "ac-none", **short), progress=False).fit()
    ElasticTrainer(config(parent_dir, "ac-blocks", activation_checkpointing="blocks", **short), progress=False).fit()
    a, b = train_rows(parent_dir / "ac-none"), train_rows(parent_dir / "ac-blocks")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        for key in ra:
            if key.endswith(("/kd", "/loss", "/budget_loss")) or key == "grad_norm":
                assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)


def test_resume_after_a_kill_logs_every_step_once(parent_dir):
    """A run killed after logging steps past its last checkpoint: the resumed run drops those rows and logs
    them again, once; a checkpoint folder the kill left half-written is removed."""
    ElasticTrainer(config(parent_dir, "kill-straight"), progress=False).fit()
    run = parent_dir / "kill-resumed"
    ElasticTrainer(config(parent_dir, "kill-resumed"), progress=False).fit(stop_at=6)
    # as if killed after step 6 was logged but before its checkpoint was complete
    step6 = state_mod.latest_checkpoint(run)
    assert step6.name.endswith("6")
    step6.rename(run / "checkpoints" / f".{step6.name}.tmp-dead")
    assert max(r["step"] for r in train_rows(run)) == 6
    ElasticTrainer(config(parent_dir, "kill-resumed"), resume=True, progress=False).fit()
    steps = [r["step"] for r in train_rows(run)]
    assert steps == [r["step"] for r in train_rows(parent_dir / "kill-straight")] == sorted(set(steps))
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_failed_start_leaves_nothing(parent_dir, tmp_path):
    out = tmp_path / "new-run"
    with pytest.raises(ValueError, match="missing"):
        ElasticTrainer(config(parent_dir, str(out), data={"train": str(tmp_path / "missing.txt")}),
                       progress=False)
    assert not out.exists()
    out.mkdir()  # an empty folder the user made stays, still empty
    with pytest.raises(ValueError, match="missing"):
        ElasticTrainer(config(parent_dir, str(out), data={"train": str(tmp_path / "missing.txt")}),
                       progress=False)
    assert out.is_dir() and not any(out.iterdir())


class _HostReads(TorchDispatchMode):
    """Records every read of a floating-point tensor's value to the host (`.item()`, `float(t)`): on a GPU
    each one waits for the device to finish all the work queued before it."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_floating_point():
            self.reads.append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))


def test_micro_steps_do_not_wait_for_the_device(parent_dir):
    """Losses and metrics stay on the device between log intervals (no host read per micro-step)."""
    trainer = ElasticTrainer(config(parent_dir, "no-sync"), progress=False)
    stage = trainer.cfg.stages[0]
    data = trainer._dataset(0)
    with _HostReads() as mode:
        for micro in range(stage.grad_accum):
            loss, _, metrics = trainer.micro_loss(next(data).tokens, 1, micro, stage)
            (loss / stage.grad_accum).backward()
    assert mode.reads == []
    assert metrics and all(torch.is_tensor(v) or isinstance(v, float) for v in metrics.values())


def test_a_bfloat16_teacher(parent_dir):
    """`distill.teacher_dtype: bfloat16` halves the teacher; the student keeps float32 master weights and
    the KD loss is the float32 teacher's up to bf16 rounding."""
    short = {"stages": [{"name": "s1", "steps": 2, "seq_len": 16, "micro_batch": 2, "grad_accum": 1}],
             "log_every": 1, "eval_every": 2, "save_every": 2}
    fp32 = ElasticTrainer(config(parent_dir, "t-fp32", **short), progress=False)
    bf16 = ElasticTrainer(config(parent_dir, "t-bf16", distill={"teacher_dtype": "bfloat16"}, **short), progress=False)
    assert {p.dtype for p in bf16.teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}
    fp32.fit()
    bf16.fit()
    a, b = train_rows(parent_dir / "t-fp32"), train_rows(parent_dir / "t-bf16")
    kd = [k for k in a[0] if k.endswith("/kd")]
    assert kd and all(b[0][k] == pytest.approx(a[0][k], rel=0.1, abs=1e-3) for k in kd)


def test_a_run_much_longer_than_its_data_is_refused(parent_dir, tmp_path):
    long = {"stages": [{"name": "s1", "steps": 2000, "seq_len": 64, "micro_batch": 8, "grad_accum": 1}]}
    out = tmp_path / "too-long"
    with pytest.raises(ValueError, match=r"data.train: the stages read 1,024,000 tokens, [0-9,]+x the .*allow_repeat: true"):
        ElasticTrainer(config(parent_dir, str(out), **long), progress=False)
    assert not out.exists()
    data = {"train": str(parent_dir / "train.txt"), "heldout": str(parent_dir / "held.txt"), "allow_repeat": True}
    trainer = ElasticTrainer(config(parent_dir, str(out), data=data, **long), progress=False)
    assert trainer.cfg.data.allow_repeat
