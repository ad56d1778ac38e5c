# SPDX-License-Identifier: Apache-2.0
"""router.exportable=puzzle on Llama-family parents: NVIDIA's per-layer format of the family, DeciLM.

- good menus (per-layer MLP widths that are multiples of 256, a global attention-heads menu, a hidden menu, a
  depth menu dropping single blocks) build, and every random choice gives a sub-model that `export --format
  auto` writes as stock or DeciLM (never our own format);
- bad menus are refused in one line naming the menu key and router.exportable: a width that is no multiple
  of 256 (from the menu, or the parent's own under a depth menu), per-layer attention heads;
- Qwen2 / Qwen3 / Mistral parents have no such format: `puzzle` is refused in one line naming router.exportable.
"""

import json
import random

import pytest

from nemotron_elastic.checkpoint.decilm import decilm_blocker
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.run import MenuConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.export import export_kind
from nemotron_elastic.router.menus import menus_from_config

# 4 decoder layers; MLPs 1024 wide so that fractions 1.0 / 0.75 / 0.5 / 0.25 are multiples of 256
LLAMA = ModelConfig(family="llama", pattern="*-" * 4, hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                    head_dim=8, rope_theta=1e4, intermediate_size=1024, mlp_gated=True, mlp_activation="silu")  # fmt: skip
GOOD = MenuConfig(hidden=[1.0, 0.5], mlp=[1.0, 0.75, 0.5, 0.25], attention_heads=[1.0, 0.5], mamba_heads=None,
                  depth=[0, 1, 3], per_layer=["mlp"])  # fmt: skip
DROP_ORDER = [5, 2, 7, 0, 3]  # least important block first: an MLP, an attention, ...


def _one_line(match, *args):
    with pytest.raises(ValueError, match=match) as err:
        menus_from_config(*args)
    assert "\n" not in str(err.value) and "router.exportable" in str(err.value), str(err.value)


@pytest.fixture
def ranking(tmp_path):
    path = tmp_path / "ranking.json"
    path.write_text(json.dumps({"depth": {"drop_order": DROP_ORDER}}))
    return path


def test_every_choice_of_good_menus_exports_to_stock_or_decilm(ranking):
    menus = {m.axis: m for m in menus_from_config(LLAMA, GOOD, ranking, "puzzle")}
    assert menus["mlp"].per_layer and sorted(set(menus["mlp"].choices.flatten().tolist())) == [256, 512, 768, 1024]
    rng = random.Random(0)
    kinds = set()
    for _ in range(30):
        spec = {axis: menus[axis].choices[0, rng.randrange(menus[axis].num_choices)].item()
                for axis in ("hidden", "attention_heads")}  # fmt: skip
        spec["mlp"] = [row[rng.randrange(4)] for row in menus["mlp"].choices.tolist()]
        dropped = DROP_ORDER[: menus["depth"].choices[0, rng.randrange(3)].item()]
        spec["layers"] = [i for i in range(LLAMA.num_layers) if i not in dropped]
        sub = SubnetSpec.from_dict(spec, LLAMA).config()
        assert decilm_blocker(sub) is None, (spec, decilm_blocker(sub))
        kinds.add(export_kind(sub, "auto"))
    assert kinds == {"decilm"} or kinds == {"decilm", "hf"}, kinds


@pytest.mark.parametrize("width,menus,match", [
    (1024, MenuConfig(mlp=[1.0, 0.6], mamba_heads=None, per_layer=["mlp"]),
     r"menus\.mlp: MLP width 614 is not a multiple of 256, which the DeciLM format needs"),
    (1024, MenuConfig(mlp=[1.0, 0.5], attention_heads=[1.0, 0.5], mamba_heads=None,
                      per_layer=["mlp", "attention_heads"]),
     r"menus\.per_layer: attention_heads per layer cannot be exported to the DeciLM format"),
    # a depth menu alone needs DeciLM too, so the parent's own width must fit it
    (1000, MenuConfig(mlp=None, mamba_heads=None, depth=[0, 1]), r"menus\.mlp: MLP width 1000 is not a multiple"),
])  # fmt: skip
def test_bad_menus_are_refused_in_one_line(width, menus, match, ranking):
    parent = ModelConfig(**{**vars(LLAMA), "intermediate_size": width})
    _one_line(match, parent, menus, ranking, "puzzle")


@pytest.mark.parametrize("family,extra", [("qwen2", {"attention_bias": True, "attention_out_bias": False}),
                                          ("qwen3", {"attention_qk_norm": True}), ("mistral", {"sliding_window": 8})])
def test_families_without_a_per_layer_format_refuse_puzzle(family, extra):
    parent = ModelConfig(**{**vars(LLAMA), "family": family, **extra})
    _one_line(rf"router\.exportable: puzzle .*a {family} parent has none", parent,
              MenuConfig(mamba_heads=None), None, "puzzle")  # fmt: skip
    assert menus_from_config(parent, MenuConfig(mamba_heads=None), None, "stock")  # stock still works
