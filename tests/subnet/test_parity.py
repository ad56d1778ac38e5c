# SPDX-License-Identifier: Apache-2.0
"""The centrepiece: masked forward == sliced forward == standalone sliced model, on every axis (float64).

Also: masked-out weights get exactly zero gradient, param_count() equals the sliced model's count, the full
spec is the parent bit for bit, nesting (slice of a slice), decoding caches under a sub-model.
"""

from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.masks import Axis, ElasticMasks
from nemotron_elastic.subnet.slicing import slice_model, slice_state_dict

HYBRID = ModelConfig(
    pattern="M-*M-*", vocab_size=61, hidden_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=4,
    intermediate_size=20, mamba_num_heads=6, mamba_head_dim=4, mamba_n_groups=3, ssm_state_size=3, chunk_size=4,
    attention_bias=True, mlp_bias=True, mamba_proj_bias=True,
)
LLAMA = ModelConfig(
    family="llama", pattern="*-*-", vocab_size=61, hidden_size=24, num_attention_heads=6, num_key_value_heads=3,
    head_dim=4, rope_theta=500.0, intermediate_size=20, mlp_gated=True, mlp_activation="silu",
    tie_word_embeddings=True,
)
TOL = 1e-10


def make_parent(cfg: ModelConfig, seed: int = 0) -> HybridLM:
    torch.manual_seed(seed)
    model = HybridLM(cfg)
    model.init_weights()
    model = model.double()
    with torch.no_grad():  # non-trivial norms, biases, A, D, dt so that every term matters
        for name, p in model.named_parameters():
            if name.endswith(("A_log", ".D", "dt_bias", "norm.weight", "bias")):
                p.add_(0.3 * torch.randn_like(p))
    return model


# Nemotron-H style head dims: attention head_dim 6 != hidden / heads (24 / 6), mamba_head_dim 5 != head_dim
HYBRID_HEAD_DIMS = replace(HYBRID, head_dim=6, mamba_head_dim=5)
PARENTS = {
    "hybrid": make_parent(HYBRID), "llama": make_parent(LLAMA), "hybrid-head-dims": make_parent(HYBRID_HEAD_DIMS),
}  # fmt: skip
IDS = torch.randint(0, 61, (2, 11), generator=torch.Generator().manual_seed(0))

AXIS_SPECS = {
    "full": {},
    "hidden": {"hidden": 13},
    "mlp": {"mlp": 7},
    "mlp_per_layer": {"mlp": [5, 17]},
    "attention_heads": {"attention_heads": [2, 4]},
    "mamba_heads": {"mamba_heads": [3, 6]},
    "mamba_head_dim": {"mamba_head_dim": 2},
    "depth": {"layers": [0, 2, 3]},
    "combined": {"hidden": 15, "mlp": [9, 3], "attention_heads": 2, "mamba_heads": 3, "mamba_head_dim": 3,
                 "layers": [0, 1, 3, 5]},
}


def three_ways(parent: HybridLM, spec: SubnetSpec, ids=IDS):
    with torch.no_grad():
        sliced = parent(ids, subnet=spec)
        masked = parent(ids, subnet=ElasticMasks.from_spec(spec, masked=True))
        alone = slice_model(parent, spec)(ids)
    return sliced, masked, alone


def assert_close(a, b, what):
    diff = (a - b).abs().max().item()
    assert diff <= TOL, f"{what}: max abs diff {diff:.3e} (mean {(a - b).abs().mean().item():.3e})"


def assert_three_ways_agree(parent, data, what=""):
    """masked == sliced == standalone for the spec `data`, and its parameter count is the sliced model's."""
    spec = SubnetSpec.from_dict(data, parent.config)
    sliced, masked, alone = three_ways(parent, spec)
    assert_close(masked, sliced, f"{what}masked vs sliced")
    assert_close(alone, sliced, f"{what}standalone vs sliced")
    assert spec.param_count() == slice_model(parent, spec).num_parameters()


@pytest.mark.parametrize("axis", list(AXIS_SPECS))
@pytest.mark.parametrize("name", ["hybrid", "hybrid-head-dims"])
def test_each_axis_hybrid(name, axis):
    assert_three_ways_agree(PARENTS[name], AXIS_SPECS[axis], f"{axis}: ")


@pytest.mark.parametrize("data", [{}, {"hidden": 10}, {"mlp": [4, 20]}, {"attention_heads": 3}, {"layers": [0, 1, 3]},
                                  {"hidden": 20, "mlp": 8, "attention_heads": [6, 3], "layers": [1, 2, 3]}])
def test_llama_family(data):
    assert_three_ways_agree(PARENTS["llama"], data)


# Llama-layout families with their attention extras, and scaled RoPE: the same invariant on every axis.
DECODERS = {
    "qwen2": {"family": "qwen2", "attention_bias": True, "attention_out_bias": False,
              "tie_word_embeddings": False},
    "qwen3": {"family": "qwen3", "attention_qk_norm": True, "attention_bias": True},
    "mistral": {"family": "mistral", "sliding_window": 4},  # 11 tokens: the window hides keys
    "llama-yarn": {"rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                       "original_max_position_embeddings": 4, "rope_theta": 500.0}},
    "llama-dynamic": {"max_position_embeddings": 8,  # 11 tokens > 8: the frequencies are rescaled
                      "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500.0}},
}  # fmt: skip
DECODER_PARENTS = {name: make_parent(replace(LLAMA, **kw)) for name, kw in DECODERS.items()}
DECODER_SPECS = {
    "hidden": {"hidden": 10},
    "mlp": {"mlp": [4, 20]},
    "attention_heads": {"attention_heads": [3, 6]},
    "depth": {"layers": [0, 1, 3]},
    "combined": {"hidden": 17, "mlp": 8, "attention_heads": 3, "layers": [0, 2, 3]},
}


@pytest.mark.parametrize("axis", list(DECODER_SPECS))
@pytest.mark.parametrize("family", list(DECODERS))
def test_decoder_families(family, axis):
    parent = DECODER_PARENTS[family]
    assert_three_ways_agree(parent, DECODER_SPECS[axis], f"{family} {axis}: ")
    assert parent.num_parameters() == parent.config.num_parameters()


@st.composite
def random_spec(draw, cfg: ModelConfig):
    def per_layer(sizes, multiple):
        return [multiple * draw(st.integers(1, s // multiple)) for s in sizes]

    layers = sorted(draw(st.sets(st.integers(0, cfg.num_layers - 1), min_size=1)))
    return {
        "hidden": draw(st.integers(1, cfg.hidden_size)),
        "mlp": per_layer(cfg.mlp_sizes_per_layer(), 1),
        "attention_heads": per_layer(cfg.attention_heads_per_layer(), cfg.num_key_value_heads),
        "mamba_heads": per_layer(cfg.mamba_heads_per_layer(), cfg.mamba_n_groups),
        "mamba_head_dim": draw(st.integers(1, cfg.mamba_head_dim)),
        "layers": layers,
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_specs(data):
    name = data.draw(st.sampled_from(sorted(PARENTS)))
    parent = PARENTS[name]
    spec = SubnetSpec.from_dict(data.draw(random_spec(parent.config)), parent.config)
    sliced, masked, alone = three_ways(parent, spec, IDS[:, :7])
    assert_close(masked, sliced, f"{name} {spec.to_dict()}: masked vs sliced")
    assert_close(alone, sliced, f"{name} {spec.to_dict()}: standalone vs sliced")
    assert spec.param_count() == slice_model(parent, spec).num_parameters()


def test_full_spec_is_the_parent_bit_for_bit():
    for parent in PARENTS.values():
        with torch.no_grad():
            assert torch.equal(parent(IDS), parent(IDS, subnet=SubnetSpec.full(parent.config)))
            assert torch.equal(parent(IDS), slice_model(parent, SubnetSpec.full(parent.config))(IDS))


def kept_entries(parent: HybridLM, spec: SubnetSpec) -> dict[str, torch.Tensor]:
    """Boolean map of which entries of every parent tensor the sliced model keeps: slice a copy whose
    entries are their own unique ids, then look the ids up."""
    ids_model = make_parent(parent.config)
    offset, id_of = 0, {}
    with torch.no_grad():
        for name, p in ids_model.named_parameters():
            p.copy_(torch.arange(offset, offset + p.numel(), dtype=p.dtype).view_as(p))
            id_of[name] = (offset, p.numel())
            offset += p.numel()
    kept_ids = torch.cat([t.reshape(-1) for t in slice_state_dict(ids_model, spec).values()]).long()
    flags = torch.zeros(offset, dtype=torch.bool)
    flags[kept_ids] = True
    return {n: flags[o : o + k].view_as(dict(parent.named_parameters())[n]) for n, (o, k) in id_of.items()}


def spec_of(name: str, axis: str) -> SubnetSpec:
    """The spec `axis` of the hybrid parent or of one of the Llama-layout parents."""
    parent = {**PARENTS, **DECODER_PARENTS}[name]
    return SubnetSpec.from_dict((AXIS_SPECS if name == "hybrid" else DECODER_SPECS)[axis], parent.config)


ZERO_GRAD_CASES = [("hybrid", a) for a in AXIS_SPECS if a != "full"] + [(f, "combined") for f in DECODERS]


@pytest.mark.parametrize("parent_name,axis", ZERO_GRAD_CASES)
def test_masked_out_weights_get_zero_gradient(parent_name, axis):
    parent = {**PARENTS, **DECODER_PARENTS}[parent_name]
    spec = spec_of(parent_name, axis)
    parent.zero_grad(set_to_none=True)
    parent(IDS, subnet=ElasticMasks.from_spec(spec, masked=True)).pow(2).sum().backward()
    kept = kept_entries(parent, spec)
    leaked, reached = [], 0
    for name, p in parent.named_parameters():
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        if (grad[~kept[name]] != 0).any():
            leaked.append(name)
        reached += int((grad[kept[name]] != 0).any())
    parent.zero_grad(set_to_none=True)
    assert not leaked, f"{axis}: masked-out entries with non-zero gradient in {leaked}"
    assert reached > 0


def test_nesting_slice_of_a_slice():
    parent = PARENTS["hybrid"]
    outer = SubnetSpec.from_dict({"hidden": 20, "mlp": [15, 12], "mamba_heads": [6, 3], "layers": [0, 1, 2, 3, 5]},
                                 parent.config)
    inner = SubnetSpec.from_dict({"hidden": 11, "mlp": [4, 12], "mamba_heads": 3, "mamba_head_dim": 2,
                                  "attention_heads": 2, "layers": [0, 2, 3, 5]}, parent.config)
    assert inner.is_within(outer) and not outer.is_within(inner)
    middle = slice_model(parent, outer)
    with torch.no_grad():
        twice = slice_model(middle, inner.relative_to(outer))(IDS)
        once = slice_model(parent, inner)(IDS)
    assert_close(twice, once, "slice of slice vs slice")


@pytest.mark.parametrize("masked", [False, True])
# not dynamic RoPE: its cached keys keep the frequencies of their time (model/rope.py)
@pytest.mark.parametrize("name", ["hybrid", "qwen3", "mistral", "llama-yarn"])
def test_decoding_cache_under_a_subnet(masked, name):
    parent = {**PARENTS, **DECODER_PARENTS}[name]
    spec = spec_of(name, "combined")
    masks = ElasticMasks.from_spec(spec, masked=masked)
    with torch.no_grad():
        full = parent(IDS, subnet=masks)
        cache = parent.new_cache()
        steps = [parent(IDS[:, :6], cache=cache, subnet=masks)]
        steps += [parent(IDS[:, t : t + 1], cache=cache, subnet=masks) for t in range(6, IDS.shape[1])]
    assert_close(torch.cat(steps, 1), full, "cached decoding vs full forward")


def test_soft_masks_and_router_scale():
    parent = PARENTS["hybrid"]
    cfg = parent.config
    spec = SubnetSpec.from_dict({"mlp": 12, "hidden": 16}, cfg)
    hard = parent(IDS, subnet=spec)
    # one-hot probabilities over choices give the hard sub-model, computing only up to the chosen size
    probs = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    soft_mlp = Axis.soft([20, 12, 6], probs)
    assert soft_mlp.size == 12
    masks = ElasticMasks.from_spec(spec)
    masks.layers = [None if m is None else m for m in masks.layers]
    for i, m in enumerate(masks.layers):
        if m is not None and cfg.pattern[i] == "-":
            m.width = soft_mlp
    masks.hidden = Axis.soft([24, 16], torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert_close(parent(IDS, subnet=masks).detach(), hard.detach(), "one-hot soft vs hard")
    # a soft mixture computes up to the largest active choice and is differentiable in the probabilities
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    masks = ElasticMasks.from_spec(SubnetSpec.full(cfg))
    for i, m in enumerate(masks.layers):
        if cfg.pattern[i] == "-":
            m.width = Axis.soft([20, 12, 6], probs)
    masks.hidden = Axis(24, scale=scale)
    parent(IDS, subnet=masks).pow(2).mean().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0
    assert scale.grad is not None and scale.grad != 0
    parent.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"hidden": 0}, "subnet.hidden"),
        ({"hidden": 25}, "subnet.hidden"),
        ({"mlp": [5]}, "subnet.mlp"),
        ({"mlp": [5, 21]}, "subnet.mlp[1]"),
        ({"attention_heads": 3}, "subnet.attention_heads[0]"),
        ({"mamba_heads": 4}, "subnet.mamba_heads[0]"),
        ({"mamba_head_dim": 5}, "subnet.mamba_head_dim"),
        ({"layers": []}, "subnet.layers"),
        ({"layers": [0, 9]}, "subnet.layers"),
        ({"layers": [2, 1]}, "subnet.layers"),
        ({"heads": 2}, "subnet.heads"),
        ({"mlp": "big"}, "subnet.mlp"),
    ],
)
def test_invalid_specs_name_the_field(data, field):
    with pytest.raises(ValueError) as err:
        SubnetSpec.from_dict(data, HYBRID)
    assert str(err.value).startswith(field), str(err.value)
    assert "\n" not in str(err.value)


def test_spec_for_another_parent_is_refused():
    spec = SubnetSpec.from_dict({"hidden": 8}, LLAMA)
    with pytest.raises(ValueError, match="different parent"):
        PARENTS["hybrid"](IDS, subnet=spec)
    with pytest.raises(ValueError, match="different parent"):
        slice_model(PARENTS["hybrid"], spec)


def test_json_round_trip(tmp_path):
    spec = SubnetSpec.from_dict(AXIS_SPECS["combined"], HYBRID)
    spec.to_json(tmp_path / "spec.json")
    again = SubnetSpec.from_json(tmp_path / "spec.json", HYBRID)
    assert again == spec and again.to_dict() == spec.to_dict()
    (tmp_path / "bad.json").write_text("{hidden: 3")
    with pytest.raises(ValueError, match="not valid JSON"):
        SubnetSpec.from_json(tmp_path / "bad.json", HYBRID)


def test_generate_with_a_subnet_equals_the_sliced_model():
    parent = PARENTS["hybrid"]
    spec = SubnetSpec.from_dict(AXIS_SPECS["combined"], parent.config)
    prompt = IDS[:, :4]
    assert torch.equal(parent.generate(prompt, 8, subnet=spec), slice_model(parent, spec).generate(prompt, 8))
