# SPDX-License-Identifier: Apache-2.0
"""Sub-networks of a parent: the cost model (parameters and memory), standalone slicing, and uniform-ratio
specs. What a sub-model *is* (`SubnetSpec`) lives in `config/spec.py`; how it runs inside the parent
(`ElasticMasks`, the layout rules) in `model/masks.py` and `model/layout.py`."""

from .cost import Sizes, layer_params, memory_bytes, param_count
from .slicing import slice_model, slice_state_dict

__all__ = ["Sizes", "layer_params", "memory_bytes", "param_count", "slice_model", "slice_state_dict"]
