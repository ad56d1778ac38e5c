# SPDX-License-Identifier: Apache-2.0
"""Importance estimation and nesting by permutation (docs/METHOD.md 4-5).

- `hooks.py`: forward hooks that accumulate per-unit activation statistics (always removed afterwards);
- `width.py`: hidden / MLP / attention-head / group-aware Mamba scores and orders;
- `depth.py`: layer ranking by normalized MSE of the logits (iterative, one-shot) and Block Importance;
- `ranking.py`: the `Ranking` dataclass and its `ranking.json` form;
- `reorder.py`: apply a ranking as one function-preserving permutation of the weights;
- `pipeline.py`: `score_model`, the `nemotron-elastic score` step (calibration -> rankings -> sorted parent).
"""

from .depth import block_importance, depth_ranking, iterative_depth_naive
from .hooks import Aggregation
from .pipeline import score_model
from .ranking import AxisRanking, DepthRanking, Ranking, order_by_scores, random_ranking
from .reorder import reorder_model
from .width import width_ranking

__all__ = [
    "Aggregation",
    "AxisRanking",
    "DepthRanking",
    "Ranking",
    "block_importance",
    "depth_ranking",
    "iterative_depth_naive",
    "order_by_scores",
    "random_ranking",
    "reorder_model",
    "score_model",
    "width_ranking",
]

