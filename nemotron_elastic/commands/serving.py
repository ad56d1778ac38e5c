# SPDX-License-Identifier: Apache-2.0
"""`nemotron-elastic serve`: every budget of a checkpoint from one copy of the weights (OpenAI-compatible)."""

from __future__ import annotations

import argparse
from typing import Any

from ..serve import SERVE_EPILOG, add_serve_arguments, serve_main

EPILOGS = {"serve": SERVE_EPILOG}


def cmd_serve(args: argparse.Namespace) -> int:
    return serve_main(args)


def register(add: Any) -> None:
    add_serve_arguments(add("serve", cmd_serve, "Serve every budget of a checkpoint over an OpenAI-compatible HTTP API."))
