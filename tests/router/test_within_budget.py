"""The decision within the budget: exact cost table, brute-force optimality, masks and the default path."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.router import (
    CostTable,
    Router,
    budget_loss,
    build_depth_menu,
    build_menu,
    decide,
    logit_scale,
    temperature,
    to_masks,
    to_spec,
    within_budget,
)
from nemotron_elastic.router.budget_loss import cost_of
from nemotron_elastic.subnet.cost import Sizes

TINY = get_preset("tiny-hybrid")
MICRO = get_preset("micro-hybrid")


def menus_for(cfg, per_layer: bool, depth: bool = True, head_dim: bool = False):
    menus = [
        build_menu(cfg, "hidden", [1.0, 0.875, 0.75, 0.625, 0.5]),
        build_menu(cfg, "mlp", [1.0, 0.75, 0.5, 0.25], per_layer=per_layer),
        build_menu(cfg, "mamba_heads", [1.0, 0.75, 0.5], per_layer=per_layer),
        build_menu(cfg, "attention_heads", [1.0, 0.5]),
    ]
    if head_dim:
        menus.append(build_menu(cfg, "mamba_head_dim", [1.0, 0.5]))
    if depth:
        menus.append(build_depth_menu(cfg, [7, 5, 1, 3][: cfg.num_layers - 1], [0, 1, 2]))
    return {m.axis: m for m in menus}


def random_scores(menus, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {a: torch.randn(m.num_rows if m.per_layer else 1, m.num_choices, generator=gen) * 3
            for a, m in menus.items()}


def exact_ratio(cfg, menus, scores, choice, kind, memory) -> float:
    spec = to_spec(cfg, menus, scores, choice)
    return float(cost_of(cfg, Sizes.from_spec(spec), kind, memory) / cost_of(cfg, Sizes.full(cfg), kind, memory))


def total_score(scores, choice) -> float:
    return sum(float(scores[a][torch.arange(len(c)) if scores[a].shape[0] > 1 else 0, c].sum())
               for a, c in choice.items())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), per_layer=st.booleans(), kind=st.sampled_from(["params", "memory"]),
       head_dim=st.booleans())
def test_cost_table_is_exact(seed, per_layer, kind, head_dim):
    """const[g] + sum_r delta[g, r, c_r] equals the cost model on the chosen spec, for any choice."""
    memory = {"context": 4096, "batch": 2} if kind == "memory" else None
    menus = menus_for(TINY, per_layer, head_dim=head_dim)
    table = CostTable(TINY, menus, kind, memory)
    gen = torch.Generator().manual_seed(seed)
    choice = {a: torch.randint(m.num_choices, (m.num_rows if m.per_layer else 1,), generator=gen)
              for a, m in menus.items()}
    scores = random_scores(menus, gen)
    assert table.ratio(choice) == pytest.approx(exact_ratio(TINY, menus, scores, choice, kind, memory), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.floats(0.3, 1.0), kind=st.sampled_from(["params", "memory"]))
def test_within_budget_is_the_best_feasible_choice(seed, budget, kind):
    """Against brute force over every homogeneous choice: the decision's guarantee (`assert_best_within`),
    None when nothing lands, and the argmax when that lands."""
    memory = {"context": 2048} if kind == "memory" else None
    menus = menus_for(TINY, per_layer=False)
    table = CostTable(TINY, menus, kind, memory)
    scores = random_scores(menus, torch.Generator().manual_seed(seed))
    landing = [(total_score(scores, c), table.ratio(c)) for c in (
        {a: torch.tensor([k]) for a, k in zip(menus, cols)}
        for cols in itertools.product(*(range(m.num_choices) for m in menus.values())))]
    got = within_budget(table, scores, budget)
    assert_best_within(got, landing, budget, lambda c: exact_ratio(TINY, menus, scores, c, kind, memory), scores)
    if got is None:
        return
    argmax = {a: s.argmax(-1) for a, s in scores.items()}
    if abs(table.ratio(argmax) / budget - 1) <= 0.05:
        assert all(torch.equal(got[a], argmax[a]) for a in menus)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.floats(0.35, 0.95), kind=st.sampled_from(["params", "memory"]))
def test_per_layer_decision_lands(seed, budget, kind):
    """Per-layer menus (too many choices to enumerate): the steps between choices are fine, so whenever the
    budget is inside the menus' span the decision exists, and it lands (exact cost of its spec)."""
    memory = {"context": 2048} if kind == "memory" else None
    menus = menus_for(TINY, per_layer=True, head_dim=True)
    table = CostTable(TINY, menus, kind, memory)
    scores = random_scores(menus, torch.Generator().manual_seed(seed))
    lo, hi = table.span()
    got = within_budget(table, scores, budget)
    if lo <= budget <= hi:
        assert got is not None  # per-layer menus are fine enough to leave no gap of 10%
    if got is not None:
        assert abs(exact_ratio(TINY, menus, scores, got, kind, memory) / budget - 1) <= 0.05 + 1e-9


def assert_best_within(got, landing, budget, ratio_of, scores, tolerance=0.05):
    """The decision's guarantee (`_knapsack`): it lands whenever a choice lands more than 1/16 of the band
    inside its edges, scores at least as high as every such choice, and never higher than the best choice
    that lands at all. landing: (score, cost ratio) of every choice."""
    lo, hi = budget * (1 - tolerance), budget * (1 + tolerance)
    margin = (hi - lo) / 16
    inside = [sc for sc, r in landing if lo + margin <= r <= hi - margin]
    anywhere = [sc for sc, r in landing if lo <= r <= hi]
    if not anywhere:
        assert got is None
        return
    if inside:
        assert got is not None
    if got is not None:
        assert lo - 1e-9 <= ratio_of(got) <= hi + 1e-9
        assert total_score(scores, got) <= max(anywhere) + 1e-9
        if inside:
            assert total_score(scores, got) >= max(inside) - 1e-9


def test_unreachable_budget_is_none_and_decide_falls_back():
    menus = menus_for(MICRO, per_layer=False, depth=False)
    table = CostTable(MICRO, menus)
    lo, _ = table.span()
    scores = random_scores(menus, torch.Generator().manual_seed(0))
    assert within_budget(table, scores, lo * 0.5) is None
    fallback = decide(scores, lo * 0.5, table)
    assert all(torch.equal(fallback[a], scores[a].argmax(-1)) for a in menus)


def test_hard_masks_take_the_choice_at_the_argmax_scale():
    """A decision moved off the argmax is realised with the row's largest probability as its scale (the
    value the argmax would have had) and the gradient of the chosen entry's probability."""
    menus = menus_for(MICRO, per_layer=False, depth=False)
    logits = {a: torch.randn(1, m.num_choices, requires_grad=True) for a, m in menus.items()}
    probs = {a: torch.softmax(z, -1) for a, z in logits.items()}
    choice = {a: (p.argmax(-1) + 1) % p.shape[-1] for a, p in probs.items()}  # never the argmax
    masks = to_masks(MICRO, menus, probs, "hard", choice=choice)
    spec = to_spec(MICRO, menus, probs, choice)
    assert masks.hidden.size == spec.hidden
    assert float(masks.hidden.scale.detach()) == pytest.approx(float(probs["hidden"].max()))
    masks.hidden.scale.backward()
    grad = logits["hidden"].grad[0]
    p = probs["hidden"].detach()[0]
    k = int(choice["hidden"][0])
    expected = p[k] * (torch.nn.functional.one_hot(torch.tensor(k), p.shape[0]) - p)  # d p_k / d z
    torch.testing.assert_close(grad, expected)


def train_budget_only_default(cfg, menus, budgets, kind, memory=None, steps=300, seed=0, form="sampled"):
    """The training default: budget loss on the sampled (sharpened Gumbel) probabilities under the training
    schedule of tau and logit scale (`form="unsharpened"`: softmax of the raw logits), decision within the
    budget."""
    torch.manual_seed(seed)
    md = {m.axis: m for m in menus}
    table = CostTable(cfg, md, kind, memory)
    router = Router(menus, budgets)
    opt = torch.optim.Adam(router.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        b = budgets[step % len(budgets)]
        probs = (router.probs(b, temperature(step, steps), logit_scale(step, steps), generator=gen)
                 if form == "sampled" else router.probs(b, gumbel=False))
        loss, _ = budget_loss(cfg, md, probs, b, kind, memory)
        opt.zero_grad()
        loss.backward()
        opt.step()
    full = cost_of(cfg, Sizes.full(cfg), kind, memory)
    reached, argmax_reached = {}, {}
    with torch.no_grad():
        for b in budgets:
            logits = router.logits(b)
            spec = to_spec(cfg, md, logits, decide(logits, b, table))
            reached[b] = float(cost_of(cfg, Sizes.from_spec(spec), kind, memory) / full)
            argmax_reached[b] = float(cost_of(cfg, Sizes.from_spec(to_spec(cfg, md, logits)), kind, memory) / full)
    return reached, argmax_reached


@pytest.mark.parametrize("form", ["sampled", "unsharpened"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind, per_layer", [("params", False), ("params", True), ("memory", False), ("memory", True)])
def test_default_path_lands_within_five_percent(kind, per_layer, seed, form):
    """docs/METHOD.md 7.3 with the training default `decision: within_budget`, and either form of the budget
    loss' probabilities (`budget_probs: sampled`, the default, or `unsharpened`): the chosen specs land within
    5% of every target, over seeds, for params and memory, homogeneous and per layer. (The paper's row-wise argmax misses 7 of these 24 targets, e.g. 0.546 at budget 0.5 for params,
    homogeneous, seed 1; benchmarks/router_landing.py measures both rules.)"""
    menus = list(menus_for(TINY, per_layer).values())
    memory = {"context": 2048, "batch": 1} if kind == "memory" else None
    reached, _ = train_budget_only_default(TINY, menus, [1.0, 0.75, 0.5], kind, memory, seed=seed, form=form)
    for b, ratio in reached.items():
        assert abs(ratio / b - 1.0) <= 0.05, f"{form} {kind} per_layer={per_layer} seed={seed}: budget {b} at {ratio:.3f}"
    assert reached[1.0] == pytest.approx(1.0)  # the full budget stays the parent


def test_menus_of_global_axes_only():
    """Only hidden and depth elastic (no row axes): the decision is the best of the enumerated global
    choices that land."""
    menus = {m.axis: m for m in (build_menu(TINY, "hidden", [1.0, 0.75, 0.5]),
                                 build_depth_menu(TINY, [7, 5, 1], [0, 1, 2]))}
    table = CostTable(TINY, menus)
    scores = random_scores(menus, torch.Generator().manual_seed(3))
    for budget in (0.5, 0.6, 0.75, 0.9):
        landing = [(total_score(scores, c), c) for c in (
            {"hidden": torch.tensor([h]), "depth": torch.tensor([d])} for h in range(3) for d in range(3))
            if abs(table.ratio(c) / budget - 1) <= 0.05]
        got = within_budget(table, scores, budget)
        if not landing:
            assert got is None
            continue
        assert total_score(scores, got) == pytest.approx(max(s for s, _ in landing))
        assert abs(exact_ratio(TINY, menus, scores, got, "params", None) / budget - 1) <= 0.05 + 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.floats(0.3, 1.0))
def test_per_layer_decision_is_optimal_by_brute_force(seed, budget):
    """Per-layer rows solved by the dynamic programme, against every choice of a small per-layer menu
    (hypothesis found seed 49, budget 0.916: the best choice sits 0.03% inside the band's lower edge)."""
    menus = {m.axis: m for m in (build_menu(TINY, "hidden", [1.0, 0.75, 0.5]),
                                 build_menu(TINY, "mlp", [1.0, 0.5, 0.25], per_layer=True),
                                 build_menu(TINY, "mamba_heads", [1.0, 0.5], per_layer=True))}
    table = CostTable(TINY, menus)
    scores = random_scores(menus, torch.Generator().manual_seed(seed))
    rows = [(a, r) for a in ("mlp", "mamba_heads") for r in range(menus[a].num_rows)]
    landing = []
    for h in range(3):
        for cols in itertools.product(*(range(menus[a].num_choices) for a, _ in rows)):
            choice = {"hidden": torch.tensor([h])}
            for a in ("mlp", "mamba_heads"):
                choice[a] = torch.tensor([c for (ax, _), c in zip(rows, cols) if ax == a])
            landing.append((total_score(scores, choice), table.ratio(choice)))
    got = within_budget(table, scores, budget)
    assert_best_within(got, landing, budget, lambda c: exact_ratio(TINY, menus, scores, c, "params", None), scores)
