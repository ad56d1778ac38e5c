# SPDX-License-Identifier: Apache-2.0
"""`nemotron-elastic serve`: every budget of a checkpoint from one copy of the weights (OpenAI-compatible);
argument registration and the entry point (also `python -m nemotron_elastic.serve`).

    nemotron-elastic serve --model runs/elastic/model [--host 127.0.0.1 --port 8000]
                           [--max-concurrency K --max-queue N --threads T --max-context L --kv-cache padded|paged
                            --mixed-budgets widest|group]
                           [--device cpu|cuda|cuda:N --dtype D] [--api-key KEY]

Nothing heavy is imported at module level, so `--help` and the CLI parser stay instant; `serve_main` loads
the engine, prints one `listening on URL` line (stdout, flushed: scripts may wait for it), serves until
SIGINT or SIGTERM, then shuts down cleanly: no new connections, running requests get `--grace` seconds to
finish, the rest are cancelled, and the exit status is 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from typing import Any

from ..config.types import positive_int
from .common import add_device_args, resolve_device

API_KEY_ENV = "NEMOTRON_ELASTIC_API_KEY"

SERVE_EPILOG = """examples:
  nemotron-elastic serve --model runs/elastic/model --port 8000
  curl http://127.0.0.1:8000/v1/models
  curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
       -d '{"model": "elastic-0.5", "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}'
"""


EPILOGS = {"serve": SERVE_EPILOG}


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {text!r}")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `serve` options to `parser` (a subcommand parser); returns it."""
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="elastic checkpoint folder (train output) or any model folder with a tokenizer",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=16,
        metavar="K",
        help="requests decoding together in one continuous batch (default 16)",
    )
    parser.add_argument(
        "--max-queue",
        type=_non_negative_int,
        default=16,
        metavar="N",
        help="requests that may wait for a free slot; more get HTTP 429 (default 16)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="T",
        help="torch CPU threads of the decoding loop (default: the available cores)",
    )
    parser.add_argument(
        "--kv-cache",
        choices=("padded", "paged"),  # model/batch_cache.py KV_KINDS (not imported: no torch at parse time)
        default="padded",
        help="KV storage of the batched decoder: one padded tensor per layer, or blocks of 16 tokens "
        "(paged; memory follows each request's length) (default padded: faster on CPU, "
        "benchmarks/results/serve_load.json)",
    )
    parser.add_argument(
        "--mixed-budgets",
        choices=("widest", "group"),  # model/batcher.py MIXED
        default="widest",
        help="requests of different budgets in one step: one forward sliced to the widest active budget with "
        "per-request masks (widest), or one sliced forward per budget (group) (default widest: faster on "
        "mixed traffic, the same on one budget; benchmarks/results/serve_load.json)",
    )
    parser.add_argument(
        "--prefill-chunk",
        type=positive_int,
        default=256,
        metavar="N",
        help="prompt tokens fed per decoding step over all new requests (a long prompt takes several steps, "
        "short ones share one), so running requests keep streaming (default 256)",
    )
    parser.add_argument(
        "--max-context",
        type=positive_int,
        metavar="L",
        help="prompt + completion token limit (default: the model's max_position_embeddings)",
    )
    parser.add_argument("--name", help="served model name prefix (default: the checkpoint folder's name)")
    add_device_args(parser)
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds running requests may finish at shutdown (default 5)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` on /v1/ routes (default: ${API_KEY_ENV}; /health and /metrics "
        "stay open)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-request access log")
    return parser


def _loopback(host: str) -> bool:
    """Whether `host` listens on this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def serve_main(args: argparse.Namespace) -> int:
    """Run the server until SIGINT / SIGTERM. Returns the exit status (0 after a clean shutdown)."""
    device, dtype = resolve_device(args)  # first: a missing device is refused before anything is read
    import torch

    from ..serve.engine import ManyInOneEngine
    from ..serve.server import ElasticServer

    threads = args.threads or _cpu_count()
    torch.set_num_threads(threads)  # one decoding thread runs every request: it gets the cores
    engine = ManyInOneEngine(args.model, dtype=dtype, name=args.name, device=device, max_context=args.max_context,
                             kv_cache=args.kv_cache, prefill_chunk=args.prefill_chunk, mixed=args.mixed_budgets)
    try:
        server = ElasticServer(engine, args.host, args.port, args.max_concurrency, args.max_queue, args.quiet,
                               api_key=args.api_key)
    except OSError as err:  # port in use, address not local: one line naming what was asked
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err})") from None
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: stop.set())
    memory = engine.memory_report()
    print(
        f"serving {', '.join(engine.models)} from one copy of the weights "
        f"({memory['weight_bytes'] / 2**20:.1f} MiB {memory['dtype']} on {device}; separate copies would take "
        f"{memory['separate_weight_bytes'] / 2**20:.1f} MiB); {args.max_concurrency} requests per batch, {threads} "
        f"threads, {args.kv_cache} KV cache, queue {args.max_queue}, context {engine.max_context}",
        file=sys.stderr,
    )
    if args.api_key is None and not _loopback(args.host):
        print(f"warning: listening on {args.host} without an API key: anyone who reaches this port can generate "
              f"(set --api-key or ${API_KEY_ENV})", file=sys.stderr)
    server.start()
    print(f"listening on {server.url}", flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        print("shutting down: finishing running requests", file=sys.stderr, flush=True)
        server.shutdown(grace=args.grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("server stopped", file=sys.stderr, flush=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return serve_main(args)


def register(add: Any) -> None:
    add_serve_arguments(add("serve", cmd_serve, "Serve every budget of a checkpoint over an OpenAI-compatible HTTP API."))


def main(argv: list[str] | None = None) -> int:
    """`python -m nemotron_elastic.serve ...`: the same options as `nemotron-elastic serve`."""
    parser = argparse.ArgumentParser(
        prog="python -m nemotron_elastic.serve",
        description="OpenAI-compatible many-in-one server.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    args = add_serve_arguments(parser).parse_args(argv)
    try:
        return serve_main(args)
    except (ValueError, OSError) as err:  # bad model path, port in use: one line, as the main CLI does
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
