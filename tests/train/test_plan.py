# SPDX-License-Identifier: Apache-2.0
"""`plan`: activations measured on fake tensors agree with what a real run saves for backward; weight,
gradient and optimizer bytes are exact; the command says whether a config fits and what to change."""

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from nemotron_elastic.cli import main
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.run import TrainConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.masks import ElasticMasks
from nemotron_elastic.router.menus import menus_from_config
from nemotron_elastic.router.router import Router
from nemotron_elastic.train.plan import activation_bytes, check_state_fits, plan_training


def _real_saved_bytes(model, ids, masks, every, bf16) -> int:
    """The reference, on real tensors: distinct storages saved for backward (parameters and their views
    excluded), plus, with checkpointing, the most any one checkpointed block saves when it runs again."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def count(fn, skip=()):
        seen = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params and ptr not in skip:
                seen[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
            out = fn()
        return sum(seen.values()), out

    saved, hidden = count(lambda: model(ids, subnet=masks, return_hidden=True, checkpoint_every=every))
    hidden.float().sum().backward()  # the run is a real one: it must backpropagate
    peak = 0
    if every:
        width = model.config.hidden_size if masks is None else masks.hidden.size
        x = torch.randn(*ids.shape, width, dtype=torch.bfloat16 if bf16 else torch.float32, requires_grad=True)
        for i, block in enumerate(model.layers):
            layer = None if masks is None else masks.layers[i]
            if i % every or (masks is not None and layer is None):
                continue
            peak = max(peak, count(lambda b=block, lay=layer: b(x, None, None, masks, lay), {x.untyped_storage().data_ptr()})[0])
    return saved + peak


SUB = {  # a sub-model of each preset: every width axis cut, one layer dropped
    "micro-hybrid": {"hidden": 24, "mlp": 32, "mamba_heads": 4, "layers": [0, 1, 2, 4]},
    "tiny-hybrid": {"hidden": 128, "mlp": 384, "mamba_heads": 8, "layers": [0, 1, 2, 3, 5, 6, 7]},
}


@pytest.mark.parametrize("preset, batch, seq", [("micro-hybrid", 2, 16), ("micro-hybrid", 1, 96),
                                                ("tiny-hybrid", 1, 64), ("tiny-hybrid", 2, 192)])
@pytest.mark.parametrize("every", [0, 1, 2])
@pytest.mark.parametrize("budget", ["full", "sub"])
def test_activations_match_a_real_run(preset, batch, seq, every, budget):
    cfg = get_preset(preset)
    spec = None if budget == "full" else SubnetSpec.from_dict(SUB[preset], cfg)
    bf16 = every == 2  # one setting under bf16 autocast, as the trainer runs by default
    torch.manual_seed(0)
    model = HybridLM(cfg)
    model.init_weights()
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    masks = None if spec is None else ElasticMasks.from_spec(spec)
    real = _real_saved_bytes(model, ids, masks, every, bf16)
    with FakeTensorMode():
        planned = activation_bytes(HybridLM(cfg), batch, seq, spec, every, bf16)["total"]
    assert planned == pytest.approx(real, rel=0.10)


def test_weights_gradients_and_optimizer_bytes_are_exact():
    parent = get_preset("micro-hybrid")
    cfg = from_dict(TrainConfig, {"menus": {"per_layer": ["mlp"]}})
    torch.manual_seed(0)
    model = HybridLM(parent)
    model.init_weights()
    router = Router(menus_from_config(parent, cfg.menus, None), cfg.budgets, cfg.router.hidden_dim)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(router.parameters()))
    ids = torch.randint(0, parent.vocab_size, (1, 8))
    (model(ids).sum() + sum(p.sum() for p in router.parameters())).backward()
    optimizer.step()

    def nbytes(tensors):
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_bytes(params):
        return nbytes(t for p in params for t in optimizer.state[p].values())

    plan = plan_training(cfg, parent, gpus=1)["static"]
    assert plan["student"] == nbytes(model.parameters()) == plan["teacher"]
    assert plan["gradients"] == nbytes(p.grad for p in model.parameters())
    assert plan["optimizer"] == state_bytes(list(model.parameters()))
    r = list(router.parameters())
    assert plan["router"] == nbytes(r) + nbytes(p.grad for p in r) + state_bytes(r)
    assert plan["unsharded"] == 0


def test_fsdp_shards_the_training_state():
    parent = get_preset("tiny-hybrid")
    one = plan_training(from_dict(TrainConfig, {"dist": "fsdp"}), parent, gpus=1)
    eight = plan_training(from_dict(TrainConfig, {"dist": "fsdp"}), parent, gpus=8)
    ddp = plan_training(from_dict(TrainConfig, {"dist": "ddp"}), parent, gpus=8)
    assert ddp["static"]["student"] == one["static"]["student"]
    assert one["static"]["student"] / 8 <= eight["static"]["student"] < one["static"]["student"] / 7
    assert eight["static"]["unsharded"] > 0 == one["static"]["unsharded"]


def test_hsdp_shards_within_a_group_and_bf16_gathers_half():
    parent = get_preset("tiny-hybrid")
    eight = plan_training(from_dict(TrainConfig, {"dist": "fsdp", "bf16": False}), parent, gpus=8)
    hsdp = plan_training(from_dict(TrainConfig, {"dist": {"strategy": "fsdp", "shard_size": 8}, "bf16": False}),
                         parent, gpus=64)
    assert hsdp["static"] == eight["static"] and hsdp["shard_size"] == 8  # 8 replicas of 8-way shards
    bf16 = plan_training(from_dict(TrainConfig, {"dist": "fsdp", "bf16": True}), parent, gpus=8)
    assert bf16["static"]["unsharded"] == eight["static"]["unsharded"] // 2  # student + fp32 teacher: 8 -> 4 B


def test_a_training_state_that_cannot_fit_is_refused():
    """Under ddp every GPU holds weights, gradients, AdamW state and the teacher: 16 + 4 bytes per
    parameter, exact; the refusal names the sizes and suggests fsdp (which the same GPUs can hold)."""
    parent = get_preset("tiny-hybrid")
    cfg = from_dict(TrainConfig, {"dist": "ddp"})
    state = sum(plan_training(cfg, parent, 8)["static"].values())
    check_state_fits(cfg, parent, 8, state)  # exactly enough
    with pytest.raises(ValueError, match=r"^dist: the training state takes .* GiB per GPU under ddp .* use dist: fsdp"):
        check_state_fits(cfg, parent, 8, state - 1)
    check_state_fits(from_dict(TrainConfig, {"dist": "fsdp"}), parent, 8, state // 4)


def test_plan_command(tmp_path, capsys):
    args = ["plan", "--config", "configs/elastic-tiny.yaml", "--model", "tiny-hybrid", "--gpus", "2"]
    assert main([*args, "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "per GPU" in out and "stage1" in out and "peak" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["fits"] is None and plan["peak"] == max(s["total"] for s in plan["stages"].values())
    assert main([*args, "--gpu-memory", "0.01"]) == 1
    assert "does NOT fit in 0.01 GiB: try activation_checkpointing: blocks" in capsys.readouterr().out
    # following the advice lowers the peak
    assert main([*args, "--json", str(tmp_path / "ac.json"), "activation_checkpointing=blocks"]) == 0
    assert json.loads((tmp_path / "ac.json").read_text())["peak"] < plan["peak"]
    # short sequences: the training state dominates, and ddp keeps all of it on every GPU
    assert main([*args, "--gpu-memory", "0.01", "stages=[{seq_len: 8, micro_batch: 1}]"]) == 1
    assert "try dist: fsdp" in capsys.readouterr().out
    assert main([*args, "--gpu-memory", "64"]) == 0
    assert "fits in 64 GiB" in capsys.readouterr().out


def test_plan_without_the_parent_says_how(tmp_path, capsys):
    rc = main(["plan", "--config", "configs/elastic-tiny.yaml", f"parent={tmp_path / 'missing'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "pass --model PRESET" in err
