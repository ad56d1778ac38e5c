# SPDX-License-Identifier: Apache-2.0
"""Model FLOPs, MFU and peak memory (train/runtime.py): FLOPs counted against the layers' own matmuls, the
sub-model read back from its masks, and the speed fields in the training log."""

import pytest
import torch
from test_trainer import config, parent_dir, train_rows  # noqa: F401 -- parent_dir: the fixture

from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.model import HybridLM
from nemotron_elastic.model.masks import ElasticMasks
from nemotron_elastic.train.elastic import ElasticTrainer
from nemotron_elastic.train.runtime import Throughput, elastic_step_flops, forward_flops, peak_tflops, spec_of


@pytest.mark.parametrize("preset", ["micro-hybrid", "micro-llama"])
def test_forward_flops_count_every_matmul_and_the_attention(preset):
    """2 FLOPs per weight of every Linear / conv (the LM head included, the embedding lookup not) per token,
    plus causal attention 2 T H hd per token and layer; checked against the modules themselves."""
    cfg = get_preset(preset)
    model = HybridLM(cfg)
    weights = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embeddings"))
    if cfg.tie_word_embeddings:
        weights += cfg.vocab_size * cfg.hidden_size  # the tied head is a matmul, listed as the embedding
    tokens, seq = 3 * 32, 32
    attention = sum(2 * seq * h * cfg.head_dim for h in cfg.attention_heads_per_layer()) * tokens
    assert forward_flops(cfg, tokens, seq) == 2 * weights * tokens + attention


def test_the_sub_model_is_read_back_from_its_masks():
    cfg = get_preset("micro-hybrid")
    spec = SubnetSpec.from_dict({"hidden": cfg.hidden_size // 2, "layers": [0, 1, 3]}, cfg)
    assert spec_of(cfg, ElasticMasks.from_spec(spec)).config() == spec.config()
    full = SubnetSpec.full(cfg)
    step = elastic_step_flops(cfg, ElasticMasks.from_spec(full), 64, 32, 0.0)
    assert step == 4 * forward_flops(cfg, 64, 32)  # teacher forward + 3x the same-size student
    half = elastic_step_flops(cfg, ElasticMasks.from_spec(spec), 64, 32, 1.0)
    assert half == forward_flops(cfg, 64, 32) + 4 * forward_flops(spec.config(), 64, 32)


def test_mfu_needs_a_peak_and_peak_memory_is_always_there():
    cpu = torch.device("cpu")
    assert peak_tflops(cpu, None) is None and peak_tflops(cpu, 2.5) == 2.5
    t = Throughput(cpu, peak=2.0)
    t.resume()
    t.add(1000, 4e12)
    t.pause()
    row = t.row()
    assert row["mfu"] == pytest.approx(row["model_tflops_per_s"] / 2.0) and row["peak_memory_gib"] > 0
    assert "mfu" not in Throughput(cpu, None).row()


def test_the_training_log_has_speed_mfu_and_memory(parent_dir):  # noqa: F811 -- the fixture
    ElasticTrainer(config(parent_dir, "mfu", peak_tflops=0.05), progress=False).fit()
    rows = train_rows(parent_dir / "mfu")
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["model_tflops_per_s"] > 0 and row["peak_memory_gib"] > 0
        assert 0 < row["mfu"] == pytest.approx(row["model_tflops_per_s"] / 0.05)


@pytest.mark.slow
def test_compiled_mixers_train_like_eager_ones(parent_dir):  # noqa: F811 -- the fixture
    """`compile: true` compiles every block's mixer (once per size: each budget is another size); the losses
    stay those of eager mode to float32 rounding. About a minute of compiling on 2 cores."""
    short = {"stages": [{"name": "s1", "steps": 2, "seq_len": 16, "micro_batch": 2, "grad_accum": 2}], "log_every": 1}
    ElasticTrainer(config(parent_dir, "eager", **short), progress=False).fit()
    ElasticTrainer(config(parent_dir, "compiled", compile=True, **short), progress=False).fit()
    a, b = train_rows(parent_dir / "eager"), train_rows(parent_dir / "compiled")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        for key in ra:
            if key.endswith(("/kd", "/loss")):
                assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
