# SPDX-License-Identifier: Apache-2.0
"""The command line: help, one-line errors with exit status 2, import / export / perplexity / generate on
tiny random HF models, and (slow) the packaged SmolLM2-135M against transformers' own GGUF loading."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    NemotronHConfig,
    NemotronHForCausalLM,
    PreTrainedTokenizerFast,
)

from nemotron_elastic.checkpoint import load_model
from nemotron_elastic.cli import build_parser, main
from nemotron_elastic.data import heldout_text
from nemotron_elastic.eval.perplexity import perplexity
from nemotron_elastic.io import load_tokenizer

COMMANDS = ("import", "prepare", "export", "generate", "perplexity", "score", "pretrain", "train", "plan", "eval", "serve",
            "demo")
REPO = Path(__file__).resolve().parents[1]


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `nemotron-elastic ARGS` in-process: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse: --help and usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, f"exit status {code}, stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{err}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def byte_bpe(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in a blink on the held-out text (the tiny models' tokenizer)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator([heldout_text()], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def tiny_hf(family: str, vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
            num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        )  # fmt: skip
        return LlamaForCausalLM(cfg).eval()
    cfg = NemotronHConfig(
        vocab_size=vocab_size, hidden_size=32, hybrid_override_pattern="M*-M-", num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=48, mamba_num_heads=4, mamba_head_dim=8,
        n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=8, time_step_min=0.01,
    )  # fmt: skip
    model = NemotronHForCausalLM(cfg).eval()
    with torch.no_grad():  # move constant inits (A_log, D, norms) away from their defaults
        for name, p in model.named_parameters():
            if name.endswith(("A_log", ".D", "dt_bias", "norm.weight")):
                p.add_(0.3 * torch.randn(p.shape))
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return byte_bpe()


@pytest.fixture(params=["llama", "nemotron_h"])
def hf_dir(request, tmp_path, tokenizer):
    """(folder, model): a tiny random HF model saved with a tokenizer."""
    model = tiny_hf(request.param, len(tokenizer))
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf", model


@pytest.fixture
def native_dir(tmp_path, tokenizer, capsys):
    """A native checkpoint of a tiny Llama, imported through the CLI."""
    model = tiny_hf("llama", len(tokenizer))
    model.save_pretrained(tmp_path / "src")
    tokenizer.save_pretrained(tmp_path / "src")
    code, _, err = cli(capsys, "import", "--hf", tmp_path / "src", "--out", tmp_path / "native")
    assert code == 0, err
    return tmp_path / "native"


# --- help ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_examples(command, capsys):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    assert f"nemotron-elastic {command}" in out and "examples:" in out


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and all(c in out for c in COMMANDS)
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_python_dash_m_is_the_console_script():
    script = shutil.which("nemotron-elastic", path=str(Path(sys.executable).parent))
    via_module = subprocess.run(
        [sys.executable, "-m", "nemotron_elastic", "--help"], check=False, capture_output=True, text=True
    )
    assert via_module.returncode == 0 and "usage: nemotron-elastic" in via_module.stdout
    if script is None:
        pytest.skip("console script not installed next to this interpreter")
    via_script = subprocess.run([script, "--help"], check=False, capture_output=True, text=True)
    assert via_script.stdout == via_module.stdout


def test_python_dash_m_user_error_is_one_line_exit_2(tmp_path):
    args = ["export", "--model", tmp_path / "missing", "--out", tmp_path / "o"]
    run = subprocess.run(
        [sys.executable, "-m", "nemotron_elastic", *args], check=False, capture_output=True, text=True
    )
    assert_one_error(run.returncode, run.stderr, "missing")
    assert not (tmp_path / "o").exists()


# --- bad input -------------------------------------------------------------------------------------------


def _siblings(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_missing_model_folder(tmp_path, capsys):
    for command in (["export", "--out", tmp_path / "out"], ["perplexity"], ["generate", "--prompt", "x"]):
        code, _, err = cli(capsys, *command, "--model", tmp_path / "nope")
        assert_one_error(code, err, "nope")
    assert _siblings(tmp_path) == set()


def test_missing_import_source(tmp_path, capsys):
    code, _, err = cli(capsys, "import", "--hf", tmp_path / "nope.gguf", "--out", tmp_path / "out")
    assert_one_error(code, err, "nope.gguf")
    assert _siblings(tmp_path) == set()


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda text: text + "pattern: [unclosed\n", "invalid YAML"),
        (lambda text: text + "bogus_key: 1\n", "bogus_key"),
        (lambda text: text.replace("hidden_size: 48", "hidden_size: forty"), "hidden_size"),
        (lambda text: "- a list\n", "mapping"),
    ],
    ids=["malformed", "unknown-key", "wrong-type", "not-a-mapping"],
)
def test_bad_config_yaml(native_dir, edit, fragment, capsys):
    config = native_dir / "config.yaml"
    config.write_text(edit(config.read_text()))
    out = native_dir.parent / "out"
    before = _siblings(native_dir.parent)
    code, _, err = cli(capsys, "export", "--model", native_dir, "--out", out)
    assert_one_error(code, err, "config.yaml", fragment)
    assert _siblings(native_dir.parent) == before, "nothing may be left in the output's folder"
    code, _, err = cli(capsys, "perplexity", "--model", native_dir)
    assert_one_error(code, err, fragment)


def test_unknown_option_and_bad_values(native_dir, capsys):
    out = native_dir.parent / "out"
    bad = [
        ["export", "--model", native_dir, "--out", out, "--bogus"],
        ["export", "--model", native_dir, "--out", out, "--format", "onnx"],
        ["import", "--hf", native_dir, "--out", out, "--dtype", "int3"],
        ["perplexity", "--model", native_dir, "--seq-len", "0"],
        ["generate", "--model", native_dir, "--prompt", "a", "--top-k", "many"],
        ["frobnicate"],
        [],
    ]
    for args in bad:
        code, _, err = cli(capsys, *args)
        assert_one_error(code, err)
    assert not out.exists()


def test_runtime_value_errors(native_dir, tmp_path, capsys):
    one_token = tmp_path / "short.txt"
    one_token.write_text("a")
    code, _, err = cli(capsys, "perplexity", "--model", native_dir, "--text", one_token)
    assert_one_error(code, err, "at least 2 tokens")
    code, _, err = cli(capsys, "perplexity", "--model", native_dir, "--text", tmp_path / "none.txt")
    assert_one_error(code, err, "none.txt")
    code, _, err = cli(capsys, "generate", "--model", native_dir, "--prompt", "a", "--temperature", "-1")
    assert_one_error(code, err, "temperature")
    (native_dir / "tokenizer.json").unlink()
    (native_dir / "tokenizer_config.json").unlink()
    code, _, err = cli(capsys, "generate", "--model", native_dir, "--prompt", "a")
    assert_one_error(code, err, "no tokenizer")


def test_existing_output_needs_overwrite(native_dir, capsys):
    out = native_dir.parent / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli(capsys, "export", "--model", native_dir, "--out", out)
    assert_one_error(code, err, "--overwrite")
    assert _siblings(out) == {"keep.txt"}
    code, _, err = cli(
        capsys, "export", "--model", native_dir, "--out", out, "--overwrite", "--format", "native"
    )
    assert code == 0, err
    assert (out / "config.yaml").is_file() and not (out / "keep.txt").exists()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "perplexity", "--model", str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError):
        main(["perplexity", "--model", str(tmp_path / "nope"), "--debug"])
    monkeypatch.setenv("NEMOTRON_ELASTIC_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["perplexity", "--model", str(tmp_path / "nope")])


# --- the commands on tiny models -------------------------------------------------------------------------


def test_import_export_round_trip(hf_dir, tmp_path, capsys):
    """HF -> native -> HF through the CLI: the export loads in transformers with the original's logits."""
    src, reference = hf_dir
    code, out, err = cli(capsys, "import", "--hf", src, "--out", tmp_path / "native")
    assert code == 0, err
    assert out.startswith("imported ") and "params" in out and out.count("\n") == 1
    code, out, err = cli(capsys, "export", "--model", tmp_path / "native", "--out", tmp_path / "export")
    assert code == 0, err

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(exported) is type(reference)
    x = torch.randint(0, reference.config.vocab_size, (2, 19))
    with torch.no_grad():
        diff = (exported(x).logits - reference(x).logits).abs().max().item()
    assert diff == 0.0, f"exported vs original logits: max abs diff {diff:.3e}"
    assert (
        load_tokenizer(tmp_path / "export")("The Time")["input_ids"]
        == load_tokenizer(src)("The Time")["input_ids"]
    )


def test_perplexity_and_generate_match_the_hf_model(hf_dir, tmp_path, capsys):
    src, reference = hf_dir
    assert cli(capsys, "import", "--hf", src, "--out", tmp_path / "native")[0] == 0
    tok = load_tokenizer(src)

    code, out, err = cli(
        capsys, "perplexity", "--model", tmp_path / "native", "--seq-len", "64", "--max-tokens", "300"
    )
    assert code == 0, err
    got = float(re.search(r"perplexity ([0-9.]+) on 300 tokens", out).group(1))
    ids = torch.tensor(tok(heldout_text())["input_ids"][:300])
    expected = perplexity(reference, ids, seq_len=64)
    assert abs(got - expected) / expected < 1e-4, f"CLI {got} vs HF model {expected}"

    prompt = "The Time Traveller"
    code, out, err = cli(
        capsys, "generate", "--model", tmp_path / "native", "--prompt", prompt, "--max-new-tokens", 8
    )
    assert code == 0, err
    prompt_ids = tok(prompt, return_tensors="pt").input_ids
    hf_ids = reference.generate(prompt_ids, max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_token_id)
    assert out == prompt + tok.decode(hf_ids[0, prompt_ids.shape[1] :], skip_special_tokens=True) + "\n"

    sample = [
        "generate",
        "--model",
        tmp_path / "native",
        "--prompt",
        prompt,
        "--temperature",
        "1.0",
        "--top-k",
        5,
    ]
    code, out, err = cli(capsys, *sample, "--seed", 7)
    assert code == 0 and out.startswith(prompt), err
    assert cli(capsys, *sample, "--seed", 7)[1] == out, "same seed, same sample"


def test_perplexity_sliding_window_option(native_dir, capsys):
    args = ["--seq-len", 32, "--stride", 16, "--max-tokens", 100, "--batch-size", 3]
    code, out, err = cli(capsys, "perplexity", "--model", native_dir, *args)
    assert code == 0, err
    assert "stride 16" in out and math.isfinite(float(re.search(r"perplexity ([0-9.]+)", out).group(1)))


# --- the packaged SmolLM2-135M (slow: dequantising the GGUF takes ~30-60 s on 2 cores, twice) ---------------


@pytest.fixture(scope="module")
def smollm2_native(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "parent"
    assert main(["import", "--hf", "smollm2", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_smollm2_import_perplexity_generate(smollm2_native, capsys):
    assert (smollm2_native / "config.yaml").is_file() and (smollm2_native / "tokenizer.json").is_file()
    code, out, err = cli(capsys, "perplexity", "--model", smollm2_native, "--max-tokens", "512")
    assert code == 0, err
    ppl = float(re.search(r"perplexity ([0-9.]+) on 512 tokens", out).group(1))
    assert 5.0 < ppl < 100.0, f"a pretrained 135M model on English prose: perplexity {ppl}"
    prompt = "The capital of France is"
    code, out, err = cli(
        capsys, "generate", "--model", smollm2_native, "--prompt", prompt, "--max-new-tokens", 5
    )
    assert code == 0 and "Paris" in out, out


@pytest.mark.slow
def test_smollm2_demo_reuses_the_parent_and_writes_demo_json(smollm2_native, tmp_path, capsys):
    (tmp_path / "demo" / "smollm2").mkdir(parents=True)
    (tmp_path / "demo" / "smollm2" / "parent").symlink_to(smollm2_native, target_is_directory=True)
    code, out, err = cli(capsys, "demo", "--smollm2", "--out", tmp_path / "demo", "--max-tokens", 300, "--new-tokens", 6)
    assert code == 0, err
    report = json.loads((tmp_path / "demo" / "smollm2" / "demo.json").read_text())
    assert report["parent"]["reused"] and report["parent"]["num_parameters"] == 134_515_008
    assert report["perplexity"]["num_tokens"] == 300 and 5.0 < report["perplexity"]["value"] < 100.0
    assert report["sample"]["greedy_completion"] in out and "held-out perplexity" in out
    assert _siblings(tmp_path / "demo" / "smollm2") == {"parent", "demo.json"}, "no temporary file left behind"


@pytest.mark.slow
def test_smollm2_matches_transformers_gguf_llama(smollm2_native, capsys):
    """Our import of the GGUF vs transformers' LlamaForCausalLM loaded from the same file (fp32):
    perplexity on the first 1,024 held-out tokens within 0.5%, identical greedy continuation."""
    from nemotron_elastic.checkpoint.gguf import packaged_smollm2_gguf

    gguf = packaged_smollm2_gguf()
    hf = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    assert type(hf) is LlamaForCausalLM
    tok = load_tokenizer(smollm2_native)
    ids = torch.tensor(tok(heldout_text())["input_ids"][:1024])

    nll_sum, count = 0.0, 0
    for begin in range(0, ids.numel(), 512):  # the transformers guide's loss-based recipe, 2 windows of 512
        window = ids[None, begin : begin + 512]
        with torch.no_grad():
            nll_sum += hf(window, labels=window).loss.item() * (window.shape[1] - 1)
        count += window.shape[1] - 1
    expected = math.exp(nll_sum / count)
    got = perplexity(load_model(smollm2_native), ids, seq_len=512, batch_size=2)
    assert abs(got - expected) / expected < 5e-3, f"native {got} vs transformers {expected}"

    prompt = "The Time Traveller looked at us and said"
    prompt_ids = tok(prompt, return_tensors="pt").input_ids
    hf_ids = hf.generate(prompt_ids, max_new_tokens=20, do_sample=False, eos_token_id=tok.eos_token_id)
    code, out, err = cli(
        capsys, "generate", "--model", smollm2_native, "--prompt", prompt, "--max-new-tokens", 20
    )
    assert code == 0, err
    assert out == prompt + tok.decode(hf_ids[0, prompt_ids.shape[1] :], skip_special_tokens=True) + "\n"
