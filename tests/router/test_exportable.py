# SPDX-License-Identifier: Apache-2.0
"""router.exportable: menus restricted so that every budget's sub-model exports to stock or Puzzle formats.

- stock: no per-layer menu; puzzle: per-layer MLP widths only, in NVIDIA's format of the parent's family (here
  NemotronH's Puzzle, relu2 MLPs; Llama's DeciLM in test_exportable_decilm.py); any: all;
- the shipped 12B recipe is Puzzle-exportable: any choice of its menus gives a spec the Puzzle format expresses;
- bad values and menus the choice rules out are refused in one line naming the key.
"""

import random

import pytest

from nemotron_elastic.checkpoint.puzzle import puzzle_blocker
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.run import MenuConfig, TrainConfig
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.config.types import ConfigError
from nemotron_elastic.config.yaml_io import load_yaml
from nemotron_elastic.router.menus import menus_from_config

HYBRID = ModelConfig(pattern="M-M*-", hidden_size=32, intermediate_size=64, mamba_num_heads=8)
LLAMA = ModelConfig(family="llama", pattern="*-*-", hidden_size=32, head_dim=8, rope_theta=1e4,
                    intermediate_size=64, mlp_gated=True, mlp_activation="silu")  # fmt: skip
RECIPE = "configs/nano-12b-v2-elastic.yaml"


def _one_line(match, fn, *args):
    with pytest.raises((ValueError, ConfigError), match=match) as err:
        fn(*args)
    assert "\n" not in str(err.value), str(err.value)


def test_bad_value_is_refused_naming_the_key():
    _one_line(r"router\.exportable: expected one of 'stock', 'puzzle', 'any'", load_yaml, TrainConfig, RECIPE,
              ["router.exportable=gguf"])  # fmt: skip


@pytest.mark.parametrize("exportable,per_layer,match", [
    ("stock", ["mlp"], r"menus\.per_layer: mlp per layer cannot be exported to stock classes"),
    ("puzzle", ["mlp", "mamba_heads"], r"menus\.per_layer: mamba_heads per layer .*Puzzle"),
    ("puzzle", ["attention_heads"], r"menus\.per_layer: attention_heads per layer"),
])  # fmt: skip
def test_menus_the_choice_rules_out_are_refused(exportable, per_layer, match):
    menus = MenuConfig(attention_heads=[1.0, 0.5], per_layer=per_layer)
    _one_line(match + r".*router\.exportable=any", menus_from_config, HYBRID, menus, None, exportable)


def test_llama_parents_need_decilm_widths_or_any_for_per_layer_mlp_or_depth():
    # puzzle on a Llama parent is DeciLM (tests/router/test_exportable_decilm.py): widths of 64 do not fit it
    _one_line(r"menus\.mlp: MLP width 32 is not a multiple of 256.*DeciLM", menus_from_config, LLAMA,
              MenuConfig(mamba_heads=None, per_layer=["mlp"]), None, "puzzle")  # fmt: skip
    _one_line(r"menus\.depth: dropping single blocks of a llama parent .*DeciLM.*router\.exportable=stock",
              menus_from_config, LLAMA, MenuConfig(mamba_heads=None, depth=[0, 1]), None, "stock")  # fmt: skip


def test_allowed_menus_build():
    assert menus_from_config(HYBRID, MenuConfig(per_layer=["mlp"]), None, "puzzle")
    assert menus_from_config(HYBRID, MenuConfig(), None, "stock")
    per_layer = MenuConfig(attention_heads=[1.0, 0.5], per_layer=["mlp", "attention_heads", "mamba_heads"])
    assert all(m.per_layer for m in menus_from_config(HYBRID, per_layer, None, "any") if m.axis != "hidden")


def test_every_choice_of_the_12b_recipe_exports_to_puzzle():
    cfg = load_yaml(TrainConfig, RECIPE)
    assert cfg.router.exportable == "puzzle"
    parent = get_preset("nemotron-nano-12b-v2")
    menus = {m.axis: m for m in menus_from_config(parent, cfg.menus, None, cfg.router.exportable)}
    rng = random.Random(0)
    for _ in range(20):  # random choices: one column per row of a per-layer menu, one for all otherwise
        spec = {}
        for axis, menu in menus.items():
            rows = menu.choices.tolist()
            if menu.per_layer:
                spec[axis] = [row[rng.randrange(menu.num_choices)] for row in rows]
            else:
                spec[axis] = rows[0][rng.randrange(menu.num_choices)]
        sub = SubnetSpec.from_dict(spec, parent).config()
        assert puzzle_blocker(sub) is None, (spec, puzzle_blocker(sub))
