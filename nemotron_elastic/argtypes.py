# SPDX-License-Identifier: Apache-2.0
"""Command-line argument types shared by `commands/` and `serve/` (no imports from either, so both can use
them without an import cycle)."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "bfloat16", "float16")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
