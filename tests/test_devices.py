# SPDX-License-Identifier: Apache-2.0
"""`--device` / `--dtype` on every command that runs a model (score, eval, perplexity, generate, serve,
export, demo): `resolve_device` itself, a device this machine lacks refused with one `error:` line before
anything is read, `--device cpu` running each command on a micro model, and `--dtype bfloat16` honoured."""

import json
import os
import signal
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "eval"))  # the eval tests' micro checkpoint
from eval_testlib import make_elastic

import nemotron_elastic.checkpoint.load as load_module
from nemotron_elastic.checkpoint import load_model
from nemotron_elastic.cli import main
from nemotron_elastic.commands.common import check_device, resolve_device
from nemotron_elastic.data import heldout_text
from nemotron_elastic.export import PROBE_RTOL, export_subnet, probe_tolerance
from nemotron_elastic.importance.pipeline import RANKING_NAME, score_model

DEVICE_COMMANDS = ("score", "eval", "perplexity", "generate", "serve", "export", "demo")
HAS_CUDA = torch.cuda.is_available()


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():  # micro models: thread hand-offs cost more than the work (see tests/eval)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    """root with root/parent (native, float32, tokenizer) and root/elastic (budgets 1.0 / 0.75 / 0.5)."""
    root = tmp_path_factory.mktemp("devices")
    make_elastic(root)
    return root


# --- resolve_device ---------------------------------------------------------------------------------------


def args(device=None, dtype=None):
    import argparse

    return argparse.Namespace(device=device, dtype=dtype)


def test_resolve_device_on_this_machine():
    assert resolve_device(args("cpu")) == (torch.device("cpu"), None)  # CPU: as stored, as before
    assert resolve_device(args("cpu", "bfloat16")) == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device(args("cpu", "float16")) == (torch.device("cpu"), torch.float16)
    default = resolve_device(args())
    assert default == ((torch.device("cuda", torch.cuda.current_device()), torch.bfloat16) if HAS_CUDA
                       else (torch.device("cpu"), None))  # fmt: skip


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_is_refused_without_a_cuda_device(device):
    with pytest.raises(ValueError, match="no CUDA device is available on this machine") as info:
        resolve_device(args(device))
    assert str(info.value).startswith(f"--device {device}:") and "\n" not in str(info.value)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "cpu:0", "cuda:-1", "mps", ""])
def test_other_device_strings_are_refused(device):
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        check_device(device)


def test_cuda_index_and_default_dtype_with_two_devices(monkeypatch):
    # two CUDA devices, simulated: the checks only ask torch.cuda how many there are
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device(args()) == (torch.device("cuda", 0), torch.bfloat16)  # CUDA default: bfloat16
    assert resolve_device(args("cuda:1")) == (torch.device("cuda", 1), torch.bfloat16)
    assert resolve_device(args("cuda", "float32")) == (torch.device("cuda", 0), torch.float32)
    with pytest.raises(ValueError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device(args("cuda:2"))


# --- a device this machine lacks: refused first, for every command -----------------------------------------


def _argv(command: str, tmp_path: Path) -> list:
    """The command with a model path that does not exist (the device error must come first)."""
    missing = tmp_path / "missing"
    return {
        "score": ["score", "--model", missing, "--data", missing, "--out", tmp_path / "out"],
        "eval": ["eval", "--model", missing, "--out", tmp_path / "out"],
        "perplexity": ["perplexity", "--model", missing],
        "generate": ["generate", "--model", missing, "--prompt", "x"],
        "serve": ["serve", "--model", missing, "--port", "0"],
        "export": ["export", "--model", missing, "--out", tmp_path / "out"],
        "demo": ["demo", "--quick", "--out", tmp_path / "out"],
    }[command]


@pytest.mark.parametrize("device", ["cuda:99", *([] if HAS_CUDA else ["cuda"]), "tpu"])
@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_missing_device_is_one_error_line_before_anything_is_read(command, device, tmp_path, capsys):
    code, out, err = cli(capsys, *_argv(command, tmp_path), "--device", device)
    line = one_error(code, err)
    assert line.startswith(f"error: --device {device}:"), line
    assert out == "" and list(tmp_path.iterdir()) == []  # nothing read, nothing written


# --- --device cpu runs every command ------------------------------------------------------------------------


def test_perplexity_and_generate_on_cpu(micro, capsys):
    code, out, err = cli(capsys, "perplexity", "--model", micro / "parent", "--max-tokens", 96, "--seq-len", 32,
                         "--device", "cpu")  # fmt: skip
    assert code == 0 and out.startswith("perplexity "), err
    code, out, err = cli(capsys, "generate", "--model", micro / "parent", "--prompt", "The", "--max-new-tokens", 4,
                         "--temperature", 0.8, "--device", "cpu")  # fmt: skip
    assert code == 0 and out.startswith("The"), err


def test_score_on_cpu_in_bfloat16_keeps_the_stored_dtype(micro, tmp_path, capsys):
    data = tmp_path / "data.txt"
    data.write_text(heldout_text()[:4000])
    out = tmp_path / "scored"
    code, _, err = cli(capsys, "score", "--model", micro / "parent", "--data", data, "--out", out, "--samples", 2,
                       "--seq-len", 16, "--depth-samples", 2, "--max-depth-drops", 1, "--quiet",
                       "--device", "cpu", "--dtype", "bfloat16")  # fmt: skip
    assert code == 0, err
    meta = json.loads((out / RANKING_NAME).read_text())["meta"]
    assert (meta["device"], meta["dtype"]) == ("cpu", "bfloat16")
    assert next(load_model(out).parameters()).dtype == torch.float32  # scored in bf16, saved as stored


def test_score_model_default_is_unchanged(micro, tmp_path):
    """No device / dtype: the same ranking as float32 on the CPU, and the same sorted weights."""
    data = tmp_path / "data.txt"
    data.write_text(heldout_text()[:4000])
    small = {"samples": 2, "seq_len": 16, "depth_samples": 2, "depth_seq_len": 8, "max_depth_drops": 1,
             "progress": False}  # fmt: skip
    a = score_model(micro / "parent", data, tmp_path / "a", **small)
    b = score_model(micro / "parent", data, tmp_path / "b", device="cpu", dtype=torch.float32, **small)
    assert json.loads((a / RANKING_NAME).read_text()) == json.loads((b / RANKING_NAME).read_text())
    for x, y in zip(load_model(a).parameters(), load_model(b).parameters()):
        assert torch.equal(x, y)


def test_eval_and_export_on_cpu(micro, tmp_path, capsys):
    code, out, err = cli(capsys, "eval", "--model", micro / "elastic", "--budgets", "0.5", "--max-tokens", 256,
                         "--seq-len", 32, "--quiet", "--out", tmp_path / "eval", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["settings"]["device"] == "cpu" and result["settings"]["dtype"] == "float32"
    code, out, err = cli(capsys, "export", "--model", micro / "elastic", "--budget", 0.5, "--out", tmp_path / "x",
                         "--device", "cpu", "--dtype", "bfloat16")  # fmt: skip
    assert code == 0 and "exported" in out, err
    assert next(load_model(tmp_path / "x").parameters()).dtype == torch.float32  # only the check ran in bf16


def test_export_check_tolerance_scales_with_the_dtype(micro, tmp_path):
    assert probe_tolerance(torch.float32) == probe_tolerance(torch.float64) == PROBE_RTOL
    assert PROBE_RTOL < probe_tolerance(torch.float16) < probe_tolerance(torch.bfloat16) < 0.1
    for fmt in ("hf", "native"):  # the check passes in bf16 against the bf16 sliced model
        result = export_subnet(micro / "elastic", tmp_path / fmt, budget=0.75, fmt=fmt, dtype=torch.bfloat16)
        assert result.path.is_dir()


def test_serve_on_cpu(micro, capsys, monkeypatch):
    from nemotron_elastic.serve.server import ElasticServer

    seen = {}
    start = ElasticServer.start

    def start_then_ask_and_stop(self):
        started = start(self)

        def ask():
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=30) as response:
                    seen["models"] = json.loads(response.read())
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # serve's handler stops it, as a user's kill would

        threading.Thread(target=ask, daemon=True).start()
        return started

    monkeypatch.setattr(ElasticServer, "start", start_then_ask_and_stop)
    code, out, err = cli(capsys, "serve", "--model", micro / "elastic", "--port", 0, "--threads", 1, "--quiet",
                         "--device", "cpu", "--dtype", "bfloat16")  # fmt: skip
    torch.set_num_threads(1)  # serve set its own count
    assert code == 0 and out.startswith("listening on http://"), err
    assert "bfloat16 on cpu" in err and len(seen["models"]["data"]) >= 3


def test_demo_passes_the_device_to_its_steps(tmp_path, capsys, monkeypatch):
    from nemotron_elastic import demo

    calls = {}

    def run_demo(out, **kw):
        calls["run_demo"] = kw
        return {"rows": []}

    monkeypatch.setattr(demo, "run_demo", run_demo)
    code, _, err = cli(capsys, "demo", "--quick", "--out", tmp_path / "d", "--device", "cpu", "--dtype", "bfloat16")
    assert code == 0, err
    assert calls["run_demo"]["device"] == torch.device("cpu") and calls["run_demo"]["dtype"] == torch.bfloat16


def test_demo_steps_run_on_the_device(micro, tmp_path, monkeypatch):
    """run_demo's own steps (score, export check, eval) get the device; the trainers are stubbed here
    (they pick their device themselves; tests/test_demo.py runs them)."""
    from nemotron_elastic import demo

    seen = []

    class NoTraining:
        def __init__(self, *a, **kw):
            pass

        def fit(self):
            return {}

    def record(name, fn):
        def wrapped(*a, **kw):
            seen.append((name, kw.get("device"), kw.get("dtype"), kw.get("settings")))
            return fn(*a, **kw)
        return wrapped

    out = tmp_path / "demo"
    for step in ("parent", "elastic"):  # finished pretrain and train steps: the micro checkpoint
        (out / step).mkdir(parents=True)
        (out / step / "model").symlink_to(micro / step, target_is_directory=True)
    (out / "elastic" / "metrics.jsonl").write_text(json.dumps({"split": "train", "step": 1, "1/kd": 0.5}) + "\n")
    monkeypatch.setattr(demo, "PretrainTrainer", NoTraining)
    monkeypatch.setattr(demo, "ElasticTrainer", NoTraining)
    monkeypatch.setattr(demo, "score_model", record("score", demo.score_model))
    monkeypatch.setattr(demo, "export_subnet", record("export", demo.export_subnet))
    monkeypatch.setattr(demo, "evaluate_model", record("eval", demo.evaluate_model))
    (out / demo.MARKER).write_text("{}")
    report = demo.run_demo(out, quick=True, progress=False, device="cpu", dtype=torch.bfloat16)
    assert {name for name, *_ in seen} == {"score", "export", "eval"} and len(report["rows"]) == 6
    for name, device, dtype, settings in seen:
        if name == "eval":
            assert (settings.device, settings.dtype) == ("cpu", "bfloat16")
        else:
            assert (device, dtype) == ("cpu", torch.bfloat16), name


# --- --dtype bfloat16 on the CPU is the dtype of the model a command builds ---------------------------------


@pytest.mark.parametrize("command", ["perplexity", "generate"])
def test_dtype_bfloat16_on_cpu(command, micro, capsys, monkeypatch):
    built = []

    def spy(*a, **kw):
        built.append(load_model(*a, **kw))
        return built[-1]

    monkeypatch.setattr(load_module, "load_model", spy)  # the commands import it when they run
    extra = ["--prompt", "The", "--max-new-tokens", 3] if command == "generate" else ["--max-tokens", 64]
    code, _, err = cli(capsys, command, "--model", micro / "parent", *extra, "--device", "cpu", "--dtype", "bfloat16")
    assert code == 0, err
    assert {p.dtype for p in built[0].parameters()} == {torch.bfloat16}
    assert {p.device.type for p in built[0].parameters()} == {"cpu"}
