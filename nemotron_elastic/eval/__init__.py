# SPDX-License-Identifier: Apache-2.0
"""Evaluation: perplexity (and, later, per-budget evaluation and lm-eval)."""
