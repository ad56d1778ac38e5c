# SPDX-License-Identifier: Apache-2.0
"""Router schedules over training (SPEC 7.2): Gumbel temperature and logit scale.

- temperature: exponential decay tau_0 * r^step from `start` (1.0) to `end` (0.05) at `total` steps
  (r = (end/start)^(1/total); NVIDIA's `tau_decay`), constant afterwards;
- logit scale: linear from `start` (1.0) to `end` (10.0) over `total` steps.
"""

from __future__ import annotations


def temperature(step: int, total: int, start: float = 1.0, end: float = 0.05) -> float:
    if total <= 0 or step >= total:
        return end if total > 0 else start
    return start * (end / start) ** (step / total)


def logit_scale(step: int, total: int, start: float = 1.0, end: float = 10.0) -> float:
    if total <= 0:
        return start
    return start + (end - start) * min(step, total) / total
