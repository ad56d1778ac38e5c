# SPDX-License-Identifier: Apache-2.0
"""The differentiable cost model against the real thing: SubnetSpec counts, sliced models, filled caches."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.decode import AttentionState, MambaState
from nemotron_elastic.subnet.cost import Sizes, layer_params, memory_bytes, param_count
from nemotron_elastic.subnet.slicing import slice_model

# every block type, 3 Mamba groups, GQA (6 query / 2 KV heads), biases on, heterogeneous parent MLP widths
HYBRID = dict(
    pattern="M-*M-*M", vocab_size=97, hidden_size=32, num_attention_heads=6, num_key_value_heads=2,
    head_dim=8, intermediate_size=[48, 40], mamba_num_heads=6, mamba_head_dim=4, mamba_n_groups=3,
    ssm_state_size=5, chunk_size=4, attention_bias=True, mlp_bias=True, mamba_proj_bias=True,
)
LLAMA = dict(
    family="llama", pattern="*-*-", vocab_size=97, hidden_size=32, num_attention_heads=6,
    num_key_value_heads=2, head_dim=8, rope_theta=1000.0, intermediate_size=40, mlp_gated=True,
    mlp_activation="silu", tie_word_embeddings=True,
)
HYBRID_SPECS = [
    {},
    {"hidden": 20},
    {"mlp": [7, 40]},
    {"attention_heads": [2, 4]},
    {"mamba_heads": [3, 6, 3]},
    {"mamba_head_dim": 3},
    {"layers": [0, 2, 5]},
    {"hidden": 24, "mlp": 16, "attention_heads": 4, "mamba_heads": 3, "mamba_head_dim": 2,
     "layers": [1, 3, 5, 6]},
    {"hidden": 9, "mamba_heads": [6, 3, 3], "layers": [0, 3]},  # no MLP and no attention layer left
]
LLAMA_SPECS = [{}, {"hidden": 16}, {"mlp": [5, 40]}, {"attention_heads": 2}, {"layers": [1, 2]},
               {"hidden": 8, "mlp": 12, "attention_heads": [4, 2], "layers": [0, 1, 3]}]


def meta_parent(cfg: ModelConfig) -> HybridLM:
    """Shapes only: enough for slicing and counting."""
    with torch.device("meta"):
        return HybridLM(cfg)


def real_parent(cfg: ModelConfig) -> HybridLM:
    with torch.device("meta"):
        model = HybridLM(cfg)
    model.to_empty(device="cpu")
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def check_counts(cfg: ModelConfig, parent: HybridLM, data: dict) -> None:
    spec = SubnetSpec.from_dict(data, cfg)
    got = param_count(cfg, Sizes.from_spec(spec))
    assert got.dtype == torch.float64 and got.shape == ()
    assert got.item() == spec.param_count() == slice_model(parent, spec).num_parameters()


@pytest.mark.parametrize(
    "kw,data",
    [pytest.param(HYBRID, d, id=f"hybrid-{d}") for d in HYBRID_SPECS]
    + [pytest.param(LLAMA, d, id=f"llama-{d}") for d in LLAMA_SPECS],
)
def test_param_count_matches_spec_and_sliced_model(kw, data):
    cfg = ModelConfig(**kw)
    check_counts(cfg, meta_parent(cfg), data)


@st.composite
def config_and_spec(draw):
    """A random micro parent (hybrid with all block types, or Llama) and a random valid spec of it."""
    if draw(st.booleans()):
        extra = draw(st.lists(st.sampled_from("M*-"), max_size=4))
        pattern = "".join(draw(st.permutations(list("M*-") + extra)))
        family, gated, tied = "nemotron_h", draw(st.booleans()), draw(st.booleans())
    else:
        pattern, family, gated, tied = "*-" * draw(st.integers(1, 3)), "llama", True, True
    kv, groups = draw(st.integers(1, 3)), draw(st.integers(2, 3))
    n_mlp, n_attn, n_mamba = (pattern.count(c) for c in "-*M")
    cfg = ModelConfig(
        family=family, pattern=pattern, vocab_size=draw(st.integers(5, 50)),
        hidden_size=draw(st.integers(2, 24)), tie_word_embeddings=tied, mlp_gated=gated,
        mlp_bias=draw(st.booleans()), attention_bias=draw(st.booleans()),
        mamba_proj_bias=draw(st.booleans()), use_conv_bias=draw(st.booleans()),
        num_key_value_heads=kv, head_dim=draw(st.integers(1, 6)),
        num_attention_heads=[kv * draw(st.integers(1, 3)) for _ in range(n_attn)],
        intermediate_size=[draw(st.integers(1, 30)) for _ in range(n_mlp)],
        mamba_n_groups=groups, mamba_num_heads=[groups * draw(st.integers(1, 3)) for _ in range(n_mamba)],
        mamba_head_dim=draw(st.integers(1, 6)), ssm_state_size=draw(st.integers(1, 6)),
        conv_kernel=draw(st.integers(1, 4)),
    )
    layers = draw(st.sets(st.integers(0, cfg.num_layers - 1), min_size=1))
    data = {
        "hidden": draw(st.integers(1, cfg.hidden_size)),
        "mlp": [draw(st.integers(1, w)) for w in cfg.mlp_sizes_per_layer()],
        "attention_heads": [kv * draw(st.integers(1, h // kv)) for h in cfg.attention_heads_per_layer()],
        "mamba_heads": [groups * draw(st.integers(1, h // groups)) for h in cfg.mamba_heads_per_layer()],
        "mamba_head_dim": draw(st.integers(1, cfg.mamba_head_dim)),
        "layers": sorted(layers),
    }
    return cfg, data


@settings(max_examples=60, deadline=None)
@given(config_and_spec())
def test_param_count_matches_random_specs(case):
    cfg, data = case
    check_counts(cfg, meta_parent(cfg), data)


@pytest.mark.parametrize(
    "name,expected", [("nemotron-nano-12b-v2", 12_310_001_152), ("nemotron-nano-9b-v2", 8_888_227_328)]
)
def test_nano_v2_parents(name, expected):
    cfg = get_preset(name)  # never built: the cost model needs only the config
    assert param_count(cfg, Sizes.full(cfg)).item() == expected


def test_gradients_have_the_right_sign_and_value():
    cfg = ModelConfig(**HYBRID)
    full = Sizes.full(cfg)
    leaves = {name: getattr(full, name).clone().requires_grad_(True) for name in vars(full)}
    leaves["layer_keep"] = torch.full((cfg.num_layers,), 0.5, dtype=torch.float64, requires_grad=True)
    param_count(cfg, Sizes(**leaves)).backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None and (leaf.grad > 0).all(), name
    # d/d w_i of keep_i * (d + 2 d w_i + bias * (w_i + d)) = keep_i * (2 d + 1)
    assert torch.equal(leaves["mlp"].grad, torch.full((2,), 0.5 * (2 * 32 + 1), dtype=torch.float64))
    # d/d keep_i is layer i's own count; embeddings, LM head and final norm do not depend on depth
    assert torch.equal(leaves["layer_keep"].grad, layer_params(cfg, full))


def test_expected_size_gives_expected_cost_along_one_axis():
    """Linear along one axis: cost(probs @ choices) == sum_c probs_c * cost(choice c), also per layer."""
    cfg = ModelConfig(**HYBRID)
    choices = torch.tensor([8.0, 24.0, 40.0], dtype=torch.float64)
    logits = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probs = torch.softmax(logits, -1)  # (num MLP layers, choices)
    base = Sizes.full(cfg)

    def with_mlp(mlp):
        return param_count(cfg, Sizes(**(vars(base) | {"mlp": mlp})))

    pairs = [(a, b) for a in range(3) for b in range(3)]  # every per-layer combination
    expected = sum(probs[0, a] * probs[1, b] * with_mlp(choices[[a, b]]) for a, b in pairs)
    torch.testing.assert_close(with_mlp(probs @ choices), expected, rtol=1e-15, atol=1e-9)
    homogeneous = sum(probs[0, a] * with_mlp(choices[a]) for a in range(3))  # one choice for every layer
    torch.testing.assert_close(with_mlp(probs[0] @ choices), homogeneous, rtol=1e-15, atol=1e-9)


def test_products_across_axes_are_exact_only_for_independent_choices():
    """hidden x MLP width: cost(E[d], E[w]) == E[cost] if d and w are independent, else off by Cov(d, w)."""
    cfg = ModelConfig(**dict(HYBRID, pattern="-*-", mlp_bias=False, intermediate_size=48))
    (d0, d1), (w0, w1), p = (8.0, 32.0), (16.0, 48.0), 0.3
    base = Sizes.full(cfg)

    def cost(d, w):
        return param_count(cfg, Sizes(**(vars(base) | {"hidden": d, "mlp": w})))

    mean_d, mean_w = p * d0 + (1 - p) * d1, p * w0 + (1 - p) * w1
    hidden, width = ((p, d0), (1 - p, d1)), ((p, w0), (1 - p, w1))
    independent = sum(pd * pw * cost(d, w) for pd, d in hidden for pw, w in width)
    torch.testing.assert_close(cost(mean_d, mean_w), independent, rtol=1e-15, atol=1e-9)
    joint = p * cost(d0, w0) + (1 - p) * cost(d1, w1)  # both small or both large
    covariance = p * (1 - p) * (d1 - d0) * (w1 - w0)
    # the d*w coefficient: 2 MLP layers x (up + down)
    expected_gap = torch.tensor(2 * 2 * covariance, dtype=torch.float64)
    torch.testing.assert_close(joint - cost(mean_d, mean_w), expected_gap)


def cache_bytes(cache) -> dict[str, int]:
    out = {"kv_cache": 0, "ssm_state": 0, "conv_state": 0}
    for state in cache.layers:
        if isinstance(state, AttentionState):
            out["kv_cache"] += sum(t.numel() * t.element_size() for t in (state.k, state.v))
        elif isinstance(state, MambaState):
            out["conv_state"] += state.conv.numel() * state.conv.element_size()
            out["ssm_state"] += state.ssm.numel() * state.ssm.element_size()
    return out


# (model dtype, bytes of weights / KV / SSM state / conv state): half models keep the SSM state in float32
@pytest.mark.parametrize(
    "dtype,sizes", [(torch.bfloat16, (2, 2, 4, 2)), (torch.float32, (4, 4, 4, 4))], ids=["bf16", "fp32"]
)
@pytest.mark.parametrize("data", [HYBRID_SPECS[i] for i in (0, 6, 7, 8)], ids=str)
def test_memory_matches_sliced_model_and_its_cache(dtype, sizes, data):
    cfg = ModelConfig(**HYBRID)
    parent = real_parent(cfg)
    spec = SubnetSpec.from_dict(data, cfg)
    model = slice_model(parent, spec).to(dtype)
    batch, context = 3, 7
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (batch, context)), cache=cache)
    weight_bytes, kv_bytes, ssm_bytes, conv_bytes = sizes
    sizes = Sizes.from_spec(spec)
    mem = memory_bytes(cfg, sizes, context, batch, weight_bytes, kv_bytes, ssm_bytes, conv_bytes)
    real = cache_bytes(cache) | {"weights": sum(t.numel() * t.element_size() for t in model.parameters())}
    assert {k: v.item() for k, v in mem.items() if k != "total"} == real
    assert mem["total"].item() == sum(real.values())
    if dtype == torch.bfloat16:  # the defaults describe a bf16 model: 2-byte weights / KV / conv, fp32 SSM
        defaults = memory_bytes(cfg, sizes, context, batch)
        assert defaults["total"].item() == sum(real.values())


def test_memory_is_differentiable_in_depth_and_mamba_sizes():
    cfg = ModelConfig(**HYBRID)
    full = Sizes.full(cfg)
    keep = torch.full((cfg.num_layers,), 0.5, dtype=torch.float64, requires_grad=True)
    heads = full.mamba_heads.clone().requires_grad_(True)
    sizes = Sizes(**(vars(full) | {"layer_keep": keep, "mamba_heads": heads}))
    memory_bytes(cfg, sizes, context=16)["total"].backward()
    assert (keep.grad > 0).all() and (heads.grad > 0).all()


def test_float32_sizes_and_scalars_per_layer():
    cfg = ModelConfig(**HYBRID)
    spec = SubnetSpec.from_dict({"mlp": 16, "mamba_heads": 3}, cfg)
    # plain Python numbers; a scalar on a per-layer field means every layer of that type
    plain = Sizes(hidden=32, mlp=16, attention_heads=6, mamba_heads=3, mamba_head_dim=4, layer_keep=1)
    assert param_count(cfg, plain).item() == spec.param_count()
    f32 = param_count(cfg, Sizes.from_spec(spec, dtype=torch.float32))
    assert f32.dtype == torch.float32 and f32.item() == spec.param_count()


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("mlp", [1.0, 2.0, 3.0], r"sizes\.mlp: .* 2 '-' layers"),
        ("attention_heads", [2.0], r"sizes\.attention_heads: .* 2 '\*' layers"),
        ("mamba_heads", [[3.0, 3.0, 3.0]], r"sizes\.mamba_heads"),
        ("layer_keep", [1.0] * 6, r"sizes\.layer_keep: .* 7 layers"),
        ("hidden", [32.0, 32.0], r"sizes\.hidden: expected a scalar"),
        ("mamba_head_dim", [4.0], r"sizes\.mamba_head_dim: expected a scalar"),
    ],
)
def test_wrong_shapes_name_the_field(field, value, match):
    cfg = ModelConfig(**HYBRID)
    sizes = Sizes(**(vars(Sizes.full(cfg)) | {field: torch.tensor(value, dtype=torch.float64)}))
    with pytest.raises(ValueError, match=match):
        param_count(cfg, sizes)
    with pytest.raises(ValueError, match=match):
        memory_bytes(cfg, sizes, context=4)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"context": -1}, "context"),
        ({"context": 4, "batch": 0}, "batch"),
        ({"context": 4, "ssm_bytes": 0}, "ssm_bytes"),
    ],
)
def test_bad_memory_arguments(kw, match):
    cfg = ModelConfig(**HYBRID)
    with pytest.raises(ValueError, match=match):
        memory_bytes(cfg, Sizes.full(cfg), **kw)
