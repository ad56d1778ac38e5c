# SPDX-License-Identifier: Apache-2.0
"""Router: menus, budget encoding, decisions (hard / soft masks, argmax spec, expected sizes), budget loss."""

import pytest
import torch

from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.model import HybridLM
from nemotron_elastic.router import (
    Router,
    budget_loss,
    build_depth_menu,
    build_menu,
    expected_sizes,
    logit_scale,
    temperature,
    to_masks,
    to_spec,
)
from nemotron_elastic.router.budget_loss import cost_of
from nemotron_elastic.subnet.cost import Sizes

MICRO = ModelConfig(
    pattern="M-*M-*", vocab_size=61, hidden_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=4,
    intermediate_size=20, mamba_num_heads=6, mamba_head_dim=4, mamba_n_groups=3, ssm_state_size=3, chunk_size=4,
)


def micro_menus(per_layer=True):
    return [
        build_menu(MICRO, "hidden", [1.0, 0.75, 0.5]),
        build_menu(MICRO, "mlp", [1.0, 0.5, 0.25], per_layer=per_layer),
        build_menu(MICRO, "attention_heads", [1.0, 0.5], per_layer=per_layer),
        build_menu(MICRO, "mamba_heads", [1.0, 0.5], per_layer=per_layer),
        build_menu(MICRO, "mamba_head_dim", [4, 2]),
        build_depth_menu(MICRO, [4, 1, 5], [0, 1, 2]),
    ]


def test_menus_round_to_granularity_and_reject_bad_input():
    assert build_menu(MICRO, "mamba_heads", [1.0, 0.7, 0.5]).choices.tolist() == [[6, 3, 3], [6, 3, 3]]
    with pytest.raises(ValueError, match="duplicate"):
        build_menu(MICRO, "mamba_heads", [1.0, 1.0])
    assert build_menu(MICRO, "mamba_heads", [1.0, 0.5]).choices.tolist() == [[6, 3], [6, 3]]
    assert build_menu(MICRO, "attention_heads", [6, 2]).choices.tolist() == [[6, 2], [6, 2]]
    assert build_menu(MICRO, "hidden", [0.5, 1.0]).choices.tolist() == [[24, 12]]
    for axis, values, msg in [
        ("mamba_heads", [4], "multiple of 3"),
        ("hidden", [1.5], "not in"),
        ("mlp", [30], "not in"),
        ("hidden", [], "empty"),
        ("heads", [1.0], "unknown"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build_menu(MICRO, axis, values)
    with pytest.raises(ValueError, match="per layer"):
        build_menu(MICRO, "hidden", [1.0], per_layer=True)
    with pytest.raises(ValueError, match="cannot drop"):
        build_depth_menu(MICRO, [4, 1], [0, 3])


def test_budget_encoding_one_hot_and_blend():
    router = Router(micro_menus(), [0.5, 1.0, 0.75])
    assert router.budgets == [1.0, 0.75, 0.5]
    assert router.encode(0.75).tolist() == [0.0, 1.0, 0.0]
    assert torch.allclose(router.encode(0.625), torch.tensor([0.0, 0.5, 0.5]))
    with pytest.raises(ValueError, match="outside the trained range"):
        router.encode(0.3)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        Router(micro_menus(), [1.5])


def test_schedules():
    assert temperature(0, 100) == 1.0 and abs(temperature(100, 100) - 0.05) < 1e-12
    assert abs(temperature(50, 100) - 0.05**0.5) < 1e-12
    assert logit_scale(0, 100) == 1.0 and logit_scale(100, 100) == 10.0 and logit_scale(50, 100) == 5.5


def make_parent():
    torch.manual_seed(0)
    model = HybridLM(MICRO)
    model.init_weights()
    return model.double()


@pytest.mark.parametrize("per_layer", [False, True])
def test_hard_decision_realises_the_argmax_spec(per_layer):
    """Straight-through hard masks compute exactly the argmax SubnetSpec, and pass gradient to the router."""
    parent, menus = make_parent(), micro_menus(per_layer)
    md = {m.axis: m for m in menus}
    router = Router(menus, [1.0, 0.75, 0.5]).double()
    ids = torch.randint(0, 61, (2, 9))
    for budget in (1.0, 0.75, 0.5):
        probs = router.probs(budget, tau=0.5, generator=torch.Generator().manual_seed(1))
        spec = to_spec(MICRO, md, probs)
        masks = to_masks(MICRO, md, probs, mode="hard", straight_through=True)
        out = parent(ids, subnet=masks)
        diff = (out - parent(ids, subnet=spec)).abs().max().item()
        assert diff < 1e-10, f"hard masks vs argmax spec: {diff:.3e}"
        router.zero_grad()
        out.pow(2).mean().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in router.parameters())
        # expected sizes of a one-hot decision are the spec's sizes
        one_hot = {k: torch.nn.functional.one_hot(v.argmax(-1), v.shape[-1]).double() for k, v in probs.items()}
        exact = cost_of(MICRO, Sizes.from_spec(spec))
        assert float(cost_of(MICRO, expected_sizes(MICRO, md, one_hot))) == pytest.approx(float(exact), rel=1e-12)
        assert spec.param_count() == int(exact)


def test_soft_masks_one_hot_equal_hard_and_are_differentiable():
    parent, menus = make_parent(), micro_menus()
    md = {m.axis: m for m in menus}
    ids = torch.randint(0, 61, (2, 9))
    router = Router(menus, [1.0, 0.5]).double()
    probs = router.probs(0.5, tau=1.0, generator=torch.Generator().manual_seed(3))
    one_hot = {k: torch.nn.functional.one_hot(v.argmax(-1), v.shape[-1]).double() for k, v in probs.items()}
    soft = parent(ids, subnet=to_masks(MICRO, md, one_hot, mode="soft"))
    hard = parent(ids, subnet=to_spec(MICRO, md, one_hot))
    assert (soft - hard).abs().max().item() < 1e-10
    parent(ids, subnet=to_masks(MICRO, md, probs, mode="soft")).pow(2).mean().backward()
    assert all(p.grad is not None for p in router.parameters())


def train_budget_only(cfg, menus, budgets, kind, memory=None, steps=300, seed=0):
    torch.manual_seed(seed)
    md = {m.axis: m for m in menus}
    router = Router(menus, budgets)
    opt = torch.optim.Adam(router.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        b = budgets[step % len(budgets)]
        probs = router.probs(b, temperature(step, steps), logit_scale(step, steps), generator=gen)
        loss, _ = budget_loss(cfg, md, probs, b, kind, memory)
        opt.zero_grad()
        loss.backward()
        opt.step()
    full = cost_of(cfg, Sizes.full(cfg), kind, memory)
    reached = {}
    for b in budgets:
        spec = to_spec(cfg, md, router.probs(b, tau=0.05, scale=10.0, gumbel=False))
        reached[b] = float(cost_of(cfg, Sizes.from_spec(spec), kind, memory) / full)
    return reached


@pytest.mark.parametrize("kind, per_layer", [("params", False), ("params", True), ("memory", False), ("memory", True)])
def test_budget_loss_alone_reaches_targets(kind, per_layer):
    """docs/METHOD.md 7.3: with only the budget loss the chosen specs land within 5% of every target."""
    cfg = get_preset("tiny-hybrid")
    menus = [
        build_menu(cfg, "hidden", [1.0, 0.875, 0.75, 0.625, 0.5]),
        build_menu(cfg, "mlp", [1.0, 0.75, 0.5, 0.25], per_layer=per_layer),
        build_menu(cfg, "mamba_heads", [1.0, 0.75, 0.5], per_layer=per_layer),
        build_menu(cfg, "attention_heads", [1.0, 0.5]),
        build_depth_menu(cfg, [7, 5, 1, 3], [0, 1, 2]),
    ]
    memory = {"context": 2048, "batch": 1} if kind == "memory" else None
    reached = train_budget_only(cfg, menus, [1.0, 0.75, 0.5], kind, memory)
    for b, ratio in reached.items():
        assert abs(ratio / b - 1.0) <= 0.05, f"{kind} per_layer={per_layer}: budget {b} reached {ratio:.3f}"
