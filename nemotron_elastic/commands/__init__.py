# SPDX-License-Identifier: Apache-2.0
"""The subcommands, one module per group; each has `register(add)` and `cmd_<name>(args)` functions."""

from . import demo, evaluate, models, pipeline, serve

COMMAND_MODULES = (models, pipeline, evaluate, serve, demo)
