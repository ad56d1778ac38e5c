# SPDX-License-Identifier: Apache-2.0
"""The `serve` command's arguments and its one-line errors (the server itself: test_concurrency.py)."""

import argparse
import socket

import pytest

from nemotron_elastic.commands.serve import add_serve_arguments, main


def parse(*argv):
    return add_serve_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_defaults_and_flags():
    args = parse("--model", "m")
    assert (args.host, args.port, args.max_concurrency, args.max_queue) == ("127.0.0.1", 8000, 16, 16)
    assert args.threads is None and args.max_context is None and args.dtype is None
    assert (args.kv_cache, args.prefill_chunk, args.mixed_budgets) == ("padded", 256, "widest")
    args = parse(
        "--model", "m", "--port", "0", "--max-queue", "0", "--max-concurrency", "3", "--max-context", "512"
    )
    assert (args.port, args.max_queue, args.max_concurrency, args.max_context) == (0, 0, 3, 512)


@pytest.mark.parametrize(
    "flags",
    [["--port", "70000"], ["--max-queue", "-1"], ["--max-concurrency", "0"], ["--threads", "x"],
     ["--kv-cache", "ring"], ["--prefill-chunk", "0"], ["--mixed-budgets", "mix"]],
)
def test_bad_flags_are_usage_errors(flags):
    with pytest.raises(SystemExit) as exit_info:
        parse("--model", "m", *flags)
    assert exit_info.value.code == 2


def test_bad_model_and_busy_port_are_one_line_errors(elastic_dir, tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--model", str(elastic_dir), "--port", str(port), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}")
