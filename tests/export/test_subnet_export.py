# SPDX-License-Identifier: Apache-2.0
"""export_subnet: a sub-model written as a checkpoint is the same function in transformers as natively.

Homogeneous specs load with the stock NemotronH / Llama classes; per-layer specs (and Llama stacks with single
blocks dropped) load through the modeling code written into the folder (`trust_remote_code=True`). Logits
agree with the native sliced model to 1e-4 (fp32), greedy generation is identical, native exports round-trip,
and bad input fails with one ValueError line before anything is written.
"""

import ast
import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, NemotronHForCausalLM

from nemotron_elastic.checkpoint import load_model, save_native
from nemotron_elastic.checkpoint.hf import read_hf, save_hf
from nemotron_elastic.checkpoint.remote_code import TEMPLATE_FILES
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.export import export_subnet
from nemotron_elastic.io import load_tokenizer
from nemotron_elastic.model import HybridLM
from nemotron_elastic.subnet.slicing import slice_model

HYBRID = ModelConfig(
    pattern="M*-M-*M-", vocab_size=96, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    intermediate_size=48, mamba_num_heads=8, mamba_head_dim=8, mamba_n_groups=2, ssm_state_size=8, chunk_size=8,
    mlp_bias=True, mamba_proj_bias=True,
)  # fmt: skip
LLAMA = ModelConfig(
    family="llama", pattern="*-" * 3, vocab_size=96, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
    head_dim=8, rope_theta=500.0, intermediate_size=64, mlp_gated=True, mlp_activation="silu",
    tie_word_embeddings=True, attention_bias=True,
)  # fmt: skip
STOCK_SPECS = {  # homogeneous: every kept layer of a type has the same width
    "hybrid": {"hidden": 24, "mlp": 32, "attention_heads": 2, "mamba_heads": 4, "mamba_head_dim": 6,
               "layers": [0, 1, 2, 3, 4, 6, 7]},
    "llama": {"hidden": 40, "mlp": 40, "attention_heads": 4, "layers": [0, 1, 4, 5]},  # a whole decoder layer dropped
}  # fmt: skip
REMOTE_SPECS = {
    # all three block types, per-layer widths on each, a reduced Mamba head dim, a dropped layer, 2 groups
    "hybrid-all-axes": ("hybrid", {"hidden": 20, "mlp": [40, 16, 8], "attention_heads": [4, 2],
                                   "mamba_heads": [8, 2, 6], "mamba_head_dim": 5, "layers": [0, 1, 2, 3, 4, 5, 7]}),
    "hybrid-mamba-only": ("hybrid", {"mamba_heads": [2, 8, 4]}),
    "llama-per-layer": ("llama", {"hidden": 40, "mlp": [64, 24, 8], "attention_heads": [6, 2, 4]}),
    "llama-block-dropped": ("llama", {"layers": [0, 1, 2, 4, 5]}),  # "*-**-": no stock Llama form
}  # fmt: skip
IDS = torch.randint(0, 96, (2, 13), generator=torch.Generator().manual_seed(1))


def make_parent(config: ModelConfig, seed: int) -> HybridLM:
    """A random fp32 parent whose every term shows in the logits (matrices at std 1/sqrt(fan_in))."""
    gen = torch.Generator().manual_seed(seed)
    model = HybridLM(config)
    model.init_weights(gen)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[1] ** -0.5)
            elif name.endswith(("A_log", ".D", "dt_bias", "norm.weight", "norm_f.weight", "bias")):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return raw


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    """name -> (in-memory parent, folder): the hybrid as a native folder with a tokenizer and as an HF folder,
    the Llama as a native folder."""
    root = tmp_path_factory.mktemp("parents")
    hybrid, llama = make_parent(HYBRID, 0), make_parent(LLAMA, 1)
    save_native(hybrid, root / "hybrid", tokenizer=word_tokenizer())
    save_hf(hybrid, root / "hybrid-hf")
    save_native(llama, root / "llama")
    return {
        "hybrid": (hybrid, root / "hybrid"),
        "hybrid-hf": (hybrid, root / "hybrid-hf"),
        "llama": (llama, root / "llama"),
    }


def native_sub(parent: HybridLM, spec: dict) -> HybridLM:
    return slice_model(parent, SubnetSpec.from_dict(spec, parent.config)).eval()


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-4) -> None:
    diff = (a.double() - b.double()).abs().max().item()
    assert diff <= atol, f"{what}: max abs diff {diff:.3e} > {atol}"


@pytest.mark.parametrize("name,source", [("hybrid", "hybrid-hf"), ("llama", "llama")])
def test_homogeneous_spec_exports_stock_classes(parents, tmp_path, name, source):
    parent, folder = parents[source]
    result = export_subnet(folder, tmp_path / "out", spec=STOCK_SPECS[name])
    assert result.kind == "hf" and result.path == tmp_path / "out"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "auto_map" not in config and not list((tmp_path / "out").glob("*.py"))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()  # no custom code
    assert type(hf) is {"hybrid": NemotronHForCausalLM, "llama": LlamaForCausalLM}[name]
    sub = native_sub(parent, STOCK_SPECS[name])
    assert result.num_parameters == sub.num_parameters() == result.spec.param_count()
    with torch.no_grad():
        assert_close(hf(IDS).logits, sub(IDS), f"{name}: stock HF export vs native sub-model")


@pytest.mark.parametrize("case", list(REMOTE_SPECS))
def test_per_layer_spec_exports_own_modeling_code(parents, tmp_path, case):
    name, spec = REMOTE_SPECS[case]
    parent, folder = parents[name]
    result = export_subnet(folder, tmp_path / "out", spec=spec)
    assert result.kind == "hf-remote-code"
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "nemotron_elastic_hybrid" and "AutoModelForCausalLM" in config["auto_map"]
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(hf).__name__ == "ElasticHybridForCausalLM"
    sub = native_sub(parent, spec)
    assert sum(p.numel() for p in hf.parameters()) == sub.num_parameters() == result.num_parameters
    with torch.no_grad():
        assert_close(hf(IDS).logits, sub(IDS), f"{case}: remote-code HF export vs native sub-model")
    # read back as native without running the code: the same config and tensors
    config_back, tensors = read_hf(out)
    assert config_back == sub.config
    state = sub.state_dict()
    assert all(torch.equal(t, state[k]) for k, t in tensors.items())


def test_modeling_code_imports_only_torch_and_transformers():
    from nemotron_elastic.checkpoint import remote_code

    folder = remote_code.writer.TEMPLATE_DIR
    for name in TEMPLATE_FILES:
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = set() if node.level else {node.module.split(".")[0]}  # relative: a sibling template
            else:
                continue
            third_party = roots - set(sys.stdlib_module_names)
            assert third_party <= {"torch", "transformers"}, f"{name} imports {third_party}"
        assert (folder / name).read_text().isascii()


@pytest.mark.parametrize("case", ["hybrid-all-axes", "llama-per-layer"])
def test_remote_code_greedy_generate_equals_native(parents, tmp_path, case):
    name, spec = REMOTE_SPECS[case]
    parent, folder = parents[name]
    export_subnet(folder, tmp_path / "out", spec=spec, verify=False)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    sub = native_sub(parent, spec)
    prompt = IDS[:, :5]
    expected = sub.generate(prompt, max_new_tokens=9)
    for use_cache in (True, False):  # decoding cache, and full recomputation every step
        got = hf.generate(prompt, max_new_tokens=9, do_sample=False, use_cache=use_cache, pad_token_id=0)
        assert torch.equal(got, expected), f"{case}: use_cache={use_cache}\n{got}\n{expected}"

    # a left-padded row gives the logits of the same row alone (attention mask honoured by every block)
    pad = 3
    batch = torch.cat([IDS[:1, :10], torch.cat([torch.zeros(1, pad, dtype=torch.long), IDS[1:, :7]], 1)])
    mask = torch.ones_like(batch)
    mask[1, :pad] = 0
    with torch.no_grad():
        padded = hf(batch, attention_mask=mask, use_cache=False).logits[1, pad:]
        alone = hf(IDS[1:, :7], use_cache=False).logits[0]
    assert_close(padded, alone, f"{case}: left-padded row vs alone")


def test_native_export_round_trips_with_tokenizer(parents, tmp_path):
    name, spec = REMOTE_SPECS["hybrid-all-axes"]
    parent, folder = parents[name]
    result = export_subnet(folder, tmp_path / "out", spec=spec, fmt="native")
    assert result.kind == "native"
    loaded = load_model(tmp_path / "out")
    sub = native_sub(parent, spec)
    assert loaded.config == sub.config and not loaded.config.is_homogeneous
    with torch.no_grad():
        assert torch.equal(loaded(IDS), sub(IDS))
    assert load_tokenizer(tmp_path / "out")("world hello")["input_ids"] == [2, 1]
    info = json.loads((tmp_path / "out" / "subnet.json").read_text())
    assert info["spec"] == result.spec.to_dict() and info["format"] == "native"
    # the HF export of the same spec carries the tokenizer too
    export_subnet(folder, tmp_path / "hf", spec=spec)
    assert load_tokenizer(tmp_path / "hf")("hello world")["input_ids"] == [1, 2]


def test_budget_of_an_elastic_checkpoint(parents, tmp_path):
    from nemotron_elastic.checkpoint.elastic import save_elastic
    from nemotron_elastic.router import Router, build_menu

    parent, _ = parents["hybrid"]
    half = {"mlp": [24, 24, 24], "mamba_heads": [4, 4, 4], "layers": [0, 1, 2, 3, 4, 5]}
    router = Router([build_menu(HYBRID, "mlp", [1.0, 0.5])], budgets=[1.0, 0.5], hidden_dim=8)
    budgets = {"budgets": [{"budget": 0.5, "spec": half}, {"budget": 1.0, "spec": {}}]}
    save_elastic(tmp_path / "elastic", parent, None, router, budgets, HYBRID, None)
    result = export_subnet(tmp_path / "elastic", tmp_path / "out", budget=0.5)
    assert result.spec == SubnetSpec.from_dict(half, HYBRID) and result.kind == "hf"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert_close(hf(IDS).logits, native_sub(parent, half)(IDS), "budget 0.5 export")


def _bad_cases(parents):
    hybrid_dir, llama_dir = parents["hybrid"][1], parents["llama"][1]
    llama_spec = SubnetSpec.from_dict({"mlp": 32}, LLAMA)
    return {
        "mlp too wide": ({"model_dir": hybrid_dir, "spec": {"mlp": [500, 8, 8]}}, r"subnet\.mlp\[0\]"),
        "mamba heads not per group": ({"model_dir": hybrid_dir, "spec": {"mamba_heads": 3}}, r"subnet\.mamba_heads"),
        "unknown key": ({"model_dir": hybrid_dir, "spec": {"hiden": 8}}, r"subnet\.hiden: unknown key"),
        "json for another parent": ({"model_dir": hybrid_dir, "spec": {"attention_heads": [2, 2, 2]}},
                                    r"subnet\.attention_heads: 3 entries"),
        "spec object of another parent": ({"model_dir": hybrid_dir, "spec": llama_spec}, r"different parent"),
        "budget on a non-elastic model": ({"model_dir": llama_dir, "budget": 0.5}, r"not an elastic checkpoint"),
        "spec and budget": ({"model_dir": hybrid_dir, "spec": {}, "budget": 0.5}, r"not both"),
        "format": ({"model_dir": hybrid_dir, "fmt": "gguf"}, r"format"),
    }  # fmt: skip


def test_bad_input_one_clear_error_and_nothing_written(parents, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"layers": [0, 99]}))
    cases = _bad_cases(parents) | {
        "spec file": (
            {"model_dir": parents["hybrid"][1], "spec": spec_file},
            r"spec\.json: subnet\.layers: 99",
        )
    }
    for what, (kwargs, pattern) in cases.items():
        out = tmp_path / "runs" / "out"
        with pytest.raises(ValueError, match=pattern) as err:
            export_subnet(out_dir=out, **kwargs)
        assert "\n" not in str(err.value), f"{what}: error spans several lines: {err.value}"
        assert not (tmp_path / "runs").exists(), f"{what}: left files behind"
