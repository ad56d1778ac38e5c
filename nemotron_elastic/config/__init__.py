# SPDX-License-Identifier: Apache-2.0
"""Configuration: what a model is, what a sub-model is, and what a run does; read and written as strict YAML.

    model.py     ModelConfig: the architecture (pattern string, widths, per-layer widths)
    spec.py      SubnetSpec: the integer sizes of one sub-model of a parent (and `resolve_spec`)
    run.py       TrainConfig / PretrainConfig: the `train` and `pretrain` run configs
    presets.py   named model configs (tiny-hybrid, Nano 12B v2, ...)
    types.py     plain data <-> dataclass conversion with one-line errors; command-line value types
    yaml_io.py   strict YAML load / atomic save, `key.sub=value` overrides

Nothing here imports torch: configs are read and checked before anything heavy is loaded.
"""

from .model import ModelConfig
from .spec import SubnetSpec
from .types import ConfigError, from_dict, to_dict
from .yaml_io import load_yaml, parse_overrides, save_yaml

__all__ = ["ConfigError", "ModelConfig", "SubnetSpec", "from_dict", "load_yaml", "parse_overrides", "save_yaml", "to_dict"]
