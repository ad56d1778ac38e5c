# SPDX-License-Identifier: Apache-2.0
"""Sub-networks: SubnetSpec (integer sizes per axis), ElasticMasks (their realisation inside the parent),
index helpers shared by the forward and the slicer, standalone slicing and the cost model."""

from .masks import Axis, ElasticMasks, LayerMasks
from .spec import SubnetSpec

__all__ = ["Axis", "ElasticMasks", "LayerMasks", "SubnetSpec"]
