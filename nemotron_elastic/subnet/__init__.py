# SPDX-License-Identifier: Apache-2.0
"""Sub-networks: SubnetSpec (integer sizes per axis), ElasticMasks (their realisation inside the parent),
index helpers shared by the forward and the slicer, standalone slicing and the cost model."""

from .cost import Sizes, layer_params, memory_bytes, param_count
from .masks import Axis, ElasticMasks, LayerMasks
from .spec import SubnetSpec


def __getattr__(name: str):
    # slicing imports the model, which imports this package: load it lazily to avoid the cycle
    if name in ("slice_model", "slice_state_dict"):
        from . import slicing

        return getattr(slicing, name)
    raise AttributeError(name)


__all__ = [
    "Axis", "ElasticMasks", "LayerMasks", "Sizes", "SubnetSpec", "layer_params", "memory_bytes", "param_count",
    "slice_model", "slice_state_dict",
]
