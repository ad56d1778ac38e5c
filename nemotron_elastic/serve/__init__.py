# SPDX-License-Identifier: Apache-2.0
"""Many-in-one serving: every budget of an elastic checkpoint from one copy of the weights.

    engine.py         ManyInOneEngine: sliced generation with per-budget caches, memory report
    model_table.py    served names -> (budget, SubnetSpec); router interpolation of untrained budgets
    text.py           prompts (chat template or plain transcript), incremental detokenization, stop strings
    memory.py         weight bytes (once) and cache bytes as measured, RSS
    openai_schema.py  request validation (4xx errors)
    responses.py      OpenAI response and chunk objects
    handlers.py       request -> prompt ids + sampling parameters -> answer; a job's events to the
                      client (SSE or JSON), disconnect detection
    scheduler.py      bounded worker pool (429 when full), cancellation
    server.py         the HTTP server (stdlib): routes, errors, clean shutdown

The command line (`nemotron-elastic serve`, `python -m nemotron_elastic.serve`) is `commands/serve.py`.
"""
