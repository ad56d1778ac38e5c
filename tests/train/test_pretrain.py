# SPDX-License-Identifier: Apache-2.0
"""Pretraining from scratch: the loss falls, the output is a loadable parent with its tokenizer, resume."""

import pytest

from nemotron_elastic.checkpoint import load_model
from nemotron_elastic.config.run import PretrainConfig
from nemotron_elastic.config.types import ConfigError, from_dict
from nemotron_elastic.io import load_tokenizer
from nemotron_elastic.train.pretrain import PretrainTrainer
from nemotron_elastic.train.run_dir import read_metrics

TEXT = "\n\n".join(
    f"Document {i}: the river runs to the sea, the sea rises to the sky, and the sky rains on the hills. " * 4
    for i in range(12)
)


def config(tmp_path, **over):
    (tmp_path / "train.txt").write_text(TEXT)
    (tmp_path / "held.txt").write_text("Held out: the hills send the rain to the river, and the river to the sea. " * 4)
    data = {
        "preset": "micro-hybrid", "model": {"vocab_size": 300}, "out": str(tmp_path / "pre"),
        "data": {"train": str(tmp_path / "train.txt"), "heldout": str(tmp_path / "held.txt"), "eval_tokens": 128},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "stages": [{"name": "pretrain", "steps": 12, "seq_len": 32, "micro_batch": 4, "grad_accum": 1}],
        "log_every": 4, "eval_every": 6, "save_every": 6, "bf16": False,
    }
    data.update(over)
    return from_dict(PretrainConfig, data)


def test_pretrain_learns_and_writes_a_parent(tmp_path):
    result = PretrainTrainer(config(tmp_path), progress=False).fit()
    rows = [r for r in read_metrics(tmp_path / "pre" / "metrics.jsonl") if r["split"] == "train"]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5, rows
    model = load_model(tmp_path / "pre" / "model")
    assert model.config.pattern == "M-*M-" and load_tokenizer(tmp_path / "pre" / "model") is not None
    assert result["ppl"] < 300


def test_pretrain_resume_matches(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    PretrainTrainer(config(tmp_path / "a", deterministic=True), progress=False).fit()
    assert PretrainTrainer(config(tmp_path / "b", deterministic=True), progress=False).fit(stop_at=6) is None
    PretrainTrainer(config(tmp_path / "b", deterministic=True), resume=True, progress=False).fit()
    ra = [r["loss"] for r in read_metrics(tmp_path / "a" / "pre" / "metrics.jsonl") if r["split"] == "train"]
    rb = [r["loss"] for r in read_metrics(tmp_path / "b" / "pre" / "metrics.jsonl") if r["split"] == "train"]
    assert ra == pytest.approx(rb, rel=1e-6)


def test_bad_model_section_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="model.hidden_sise"):
        PretrainTrainer(config(tmp_path, model={"hidden_sise": 3}), progress=False)
    assert not (tmp_path / "pre").exists()
