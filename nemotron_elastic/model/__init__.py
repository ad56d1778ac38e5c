# SPDX-License-Identifier: Apache-2.0
"""The native hybrid model: Mamba2 / attention / MLP blocks, decoding caches, generation."""

from .decode import AttentionState, InferenceCache, MambaState
from .hybrid import Block, HybridLM

__all__ = ["AttentionState", "Block", "HybridLM", "InferenceCache", "MambaState"]
