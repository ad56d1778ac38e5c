# SPDX-License-Identifier: Apache-2.0
"""Many-in-one serving: every budget of an elastic checkpoint from one copy of the weights.

    engine.py         ManyInOneEngine: sliced generation with per-budget caches, memory report
    model_table.py    served names -> (budget, SubnetSpec); router interpolation of untrained budgets
    detokenize.py     incremental detokenization and stop strings
    memory.py         weight bytes (once), measured and predicted cache bytes, RSS
    prompts.py        chat template or plain transcript
    openai_schema.py  request validation (4xx errors)
    responses.py      OpenAI response and chunk objects
    handlers.py       request -> prompt ids + sampling parameters -> answer
    scheduler.py      bounded worker pool (429 when full), cancellation
    server.py         the HTTP server (stdlib): routes, errors, clean shutdown
    relay.py          a job's events to the client (SSE or JSON), disconnect detection
    command.py        `serve` arguments and entry point

The CLI hooks are `command.add_serve_arguments(parser)` and `command.serve_main(args)`. This module
imports nothing heavy, so `from nemotron_elastic.serve import add_serve_arguments` keeps `--help` instant;
the engine and server are imported from their modules.
"""

from .command import SERVE_EPILOG, add_serve_arguments, serve_main

__all__ = ["SERVE_EPILOG", "add_serve_arguments", "serve_main"]
