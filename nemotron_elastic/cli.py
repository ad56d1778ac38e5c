# SPDX-License-Identifier: Apache-2.0
"""The `nemotron-elastic` command line (`python -m nemotron_elastic` is the same).

    nemotron-elastic import     --hf PATH --out DIR          HF NemotronH/Llama/Qwen/Mistral, GGUF -> native
    nemotron-elastic prepare    --config FILE --tokenizer DIR --out DIR   documents -> token shards, once
    nemotron-elastic score      --model DIR --data PATH --out DIR   importance rankings + reordered parent
    nemotron-elastic pretrain   --config FILE                a small hybrid parent from scratch
    nemotron-elastic train      --config FILE                elastic training: router + multi-budget KD
    nemotron-elastic plan       --config FILE --gpus N       per-GPU memory and FLOPs, before launching
    nemotron-elastic export     --model DIR --out DIR [--budget B | --spec FILE]   one sub-model, standard HF
    nemotron-elastic eval       --model DIR [--budgets ...]  per-budget perplexity, size, memory, lm-eval tasks
    nemotron-elastic perplexity --model DIR [--text FILE]    perplexity on a text (default: packaged held-out)
    nemotron-elastic generate   --model DIR --prompt TEXT    greedy or sampled continuation
    nemotron-elastic serve      --model DIR                  every budget from one weight copy, OpenAI API
    nemotron-elastic demo                                    the whole pipeline on the embedded default

Each subcommand is a `cmd_<name>(args) -> int` function in a module of `nemotron_elastic/commands/`, which
registers its own arguments. `main` turns user errors (ValueError, which includes ConfigError, and OSError
such as a missing path) into exactly one `error: ...` line on stderr and exit status 2; `--debug` or
NEMOTRON_ELASTIC_DEBUG=1 re-raises them with the traceback. Heavy imports (torch, transformers) happen
inside the commands, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from .commands import COMMAND_MODULES

PROG = "nemotron-elastic"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one `error:` line (argparse prints usage + message)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (exposed for tests and docs)."""
    debug = _Parser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite a --debug given before the subcommand.
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = _Parser(
        prog=PROG,
        description="Many-in-one elastic LLMs (Nemotron Elastic): import, score, train, slice, export, "
        "evaluate and serve hybrid Mamba2/attention and Llama models.",
        epilog="Run `nemotron-elastic COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also NEMOTRON_ELASTIC_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for module in COMMAND_MODULES:
        epilogs = getattr(module, "EPILOGS", {})

        def add(name: str, func: Any, help_: str, _epilogs: dict = epilogs) -> argparse.ArgumentParser:
            p = sub.add_parser(
                name,
                help=help_,
                description=help_,
                epilog=_epilogs.get(name),
                parents=[debug],
                formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the examples' line breaks
            )
            p.set_defaults(func=func)
            return p

        module.register(add)
    return parser


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)  # ConfigError is a ValueError


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:  # e.g. open() of a missing file
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("NEMOTRON_ELASTIC_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
