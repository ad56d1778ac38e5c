# SPDX-License-Identifier: Apache-2.0
"""Training from prepared data (data/run_data.py, docs/DESIGN.md 3.10): per-stage data switches at the stage
boundary, per-source held-out reports, `loss_on: assistant` hands the loss exactly the assistant spans,
tokenizer mismatches and unset recipe paths are refused before anything is written."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from nemotron_elastic.checkpoint import save_native
from nemotron_elastic.config.prepare import PrepareConfig
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.run import PretrainConfig, TrainConfig
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.config.yaml_io import load_yaml
from nemotron_elastic.data.prepare import prepare
from nemotron_elastic.data.tokenizer import train_bpe
from nemotron_elastic.io import load_tokenizer
from nemotron_elastic.model import HybridLM
from nemotron_elastic.train.elastic import ElasticTrainer
from nemotron_elastic.train.pretrain import PretrainTrainer
from nemotron_elastic.train.run_dir import read_metrics

RIVERS = [f"River {i} runs to the sea, and the sea {i} rises to the sky over the hills. " * 3 for i in range(20)]
NUMBERS = [f"Count {i}: one two three four five six seven eight nine ten, and {i} again. " * 3 for i in range(20)]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CHATS = [[{"role": "user", "content": f"What is river {i}?"},
          {"role": "assistant", "content": f"River {i} runs to the sea."},
          {"role": "user", "content": "And then?"}, {"role": "assistant", "content": f"It rises {i} times."}]
         for i in range(24)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A parent whose tokenizer has a chat template, and its data prepared: rivers, numbers (text), chat."""
    root = tmp_path_factory.mktemp("run-data")
    tok = train_bpe(RIVERS + NUMBERS, 320)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    cfg = dataclasses.replace(get_preset("micro-hybrid"), vocab_size=len(tok))
    torch.manual_seed(0)
    model = HybridLM(cfg)
    model.init_weights()
    save_native(model, root / "parent", tokenizer=tok)
    for name, docs in (("rivers", RIVERS), ("numbers", NUMBERS)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (root / "chat.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    sources = [{"name": "rivers", "path": str(root / "rivers.jsonl")},
               {"name": "numbers", "path": str(root / "numbers.jsonl")},
               {"name": "chat", "path": str(root / "chat.jsonl"), "format": "messages"}]
    prepare(from_dict(PrepareConfig, {"sources": sources, "heldout_fraction": 0.25}), root / "parent",
            root / "prepared", progress=False)
    return root


class Recording(PretrainTrainer):
    """Keeps every micro-batch it trains on: (step, tokens)."""

    seen: list

    def micro_loss(self, batch, step, draw, stage, mask=None):
        self.seen.append((step, batch.clone()))
        return super().micro_loss(batch, step, draw, stage, mask)


def contains(stream, row) -> bool:
    """Whether the window `row` is a run of the source stream's tokens."""
    tokens = stream.tokens(0, len(stream)).astype(np.int64)
    row = row.numpy()
    starts = np.flatnonzero(tokens[: len(tokens) - len(row) + 1] == row[0])
    return any(np.array_equal(tokens[s : s + len(row)], row) for s in starts)


def test_each_stage_trains_on_its_own_data_and_every_source_is_evaluated(root):
    prepared = root / "prepared"
    cfg = from_dict(PretrainConfig, {
        "preset": "micro-hybrid", "tokenizer": str(root / "parent"), "out": str(root / "stages"),
        "data": {"train": str(prepared / "rivers"), "eval_tokens": 64},
        "stages": [{"name": "s1", "steps": 3, "seq_len": 16, "micro_batch": 2},
                   {"name": "s2", "steps": 3, "seq_len": 24, "micro_batch": 2,
                    "data": [{"path": str(prepared / "numbers")}]}],
        "log_every": 3, "eval_every": 3, "save_every": 100, "bf16": False,
    })
    trainer = Recording(cfg, progress=False)
    trainer.seen = []
    trainer.fit()
    rivers, numbers = trainer.run_data.stages[0][0][0], trainer.run_data.stages[1][0][0]
    assert (rivers.name, numbers.name) == ("rivers", "numbers")
    assert [s for s, _ in trainer.seen] == [0, 1, 2, 3, 4, 5]
    for step, batch in trainer.seen:
        source = rivers if step < 3 else numbers
        assert all(contains(source, row) for row in batch), step
        assert batch.shape[1] == (17 if step < 3 else 25)
    evals = [r for r in read_metrics(root / "stages" / "metrics.jsonl") if r["split"] == "eval"]
    assert set(evals[-1]["sources"]) == {"rivers", "numbers"}  # each source's own held-out split
    both = evals[-1]["sources"]
    assert min(both["rivers"]["ce"], both["numbers"]["ce"]) <= evals[-1]["ce"] <= max(both["rivers"]["ce"],
                                                                                     both["numbers"]["ce"])


def test_loss_on_assistant_counts_exactly_the_assistant_spans(root):
    cfg = from_dict(TrainConfig, {
        "parent": str(root / "parent"), "out": str(root / "chat-run"), "budgets": [1.0, 0.5],
        "menus": {"hidden": [1.0, 0.5], "mlp": [1.0, 0.5], "mamba_heads": [1.0, 0.5]},
        "stages": [{"name": "s1", "steps": 2, "seq_len": 32, "micro_batch": 4, "grad_accum": 1}],
        "data": {"train": [{"path": str(root / "prepared" / "chat"), "weight": 0.5},
                           {"path": str(root / "prepared" / "rivers"), "weight": 0.5}],
                 "loss_on": "assistant", "eval_tokens": 64},
        "bf16": False,
    })
    trainer = ElasticTrainer(cfg, progress=False)
    tok = load_tokenizer(root / "parent")
    chat = trainer.run_data.stages[0][0][0]
    answers = {f"River {i} runs to the sea.<|im_end|>" for i in range(24)} | {
        f"It rises {i} times.<|im_end|>" for i in range(24)}
    batch = next(trainer._dataset(0))
    seen_chat = 0
    for row, mask in zip(batch.tokens, batch.loss_mask):
        if not contains(chat, row):  # a text window: every target counts
            assert bool(mask.all())
            continue
        seen_chat += 1
        targets, bits = row[1:].tolist(), mask.tolist()
        runs, current = [], []
        for token, bit in zip(targets + [None], bits + [False]):
            if bit:
                current.append(token)
            elif current:
                runs.append(tok.decode(current))
                current = []
        # every run of counted targets is (the end of, at a window's edge) one assistant answer and nothing else
        assert runs and all(any(a.endswith(r) or a.startswith(r) or a == r for a in answers) for r in runs), runs
        uncounted = tok.decode([t for t, b in zip(targets, bits) if not b])
        assert "runs to the sea." not in uncounted and "times." not in uncounted
    assert seen_chat
    # the trainer hands that mask to the KD loss: all-true equals no mask, the assistant mask differs
    state = trainer.generator.get_state()
    losses = []
    for mask in (None, torch.ones_like(batch.loss_mask), batch.loss_mask):
        trainer.generator.set_state(state)
        losses.append(float(trainer.micro_loss(batch.tokens, 0, 0, cfg.stages[0], mask=mask)[2]["kd"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[2] != pytest.approx(losses[0], rel=1e-3)


def test_a_source_prepared_with_another_tokenizer_is_refused(root, tmp_path):
    other = tmp_path / "other-tok"
    train_bpe(NUMBERS, 300, out_dir=other)
    cfg = from_dict(PretrainConfig, {
        "preset": "micro-hybrid", "tokenizer": str(other), "out": str(tmp_path / "run"),
        "data": {"train": [{"path": str(root / "prepared" / "rivers")}]},
        "stages": [{"name": "s1", "steps": 2, "seq_len": 16, "micro_batch": 2}], "bf16": False,
    })
    with pytest.raises(ValueError, match=r"^data.train\[0\].path: .*rivers was prepared with another tokenizer"):
        PretrainTrainer(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_recipe_with_unset_paths_is_refused_naming_the_key(tmp_path):
    recipe = load_yaml(TrainConfig, "configs/nano-12b-v2-elastic.yaml", [f"out={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=r"^data.train\[0\].path: not set.*data.train.0.path=DIR\)$"):
        ElasticTrainer(recipe, progress=False)
    partly = load_yaml(TrainConfig, "configs/nano-12b-v2-elastic.yaml",
                       ["data.train.0.path=a", "data.train.1.path=b", f"out={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=r"^stages\[1\].data\[0\].path: not set.*stages.1.data.0.path=DIR\)$"):
        ElasticTrainer(partly, progress=False)
    assert not (tmp_path / "run").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize(("data", "stages", "message"), [
    ({"train": [{"path": "a", "weight": 0}]}, None, r"data.train\[0\].weight: must be > 0"),
    ({"train": [{"path": "a", "weight": -1.0}]}, None, r"data.train\[0\].weight: must be > 0"),
    ({"train": []}, None, r"data.train: an empty blend"),
    ({"train": [{"path": "a"}, {"path": "a"}]}, None, r"data.train: a source appears twice"),
    ({"train": [{"path": "a", "wieght": 1}]}, None, r"data.train\[0\].wieght: unknown key"),
    ({"loss_on": "assistants"}, None, r"data.loss_on: expected one of 'all', 'assistant'"),
    ({}, [{"name": "s", "data": []}], r"stages\[0\].data: an empty blend"),
    ({}, [{"name": "s"}, {"name": "s"}], r"stages: duplicate names"),
])
def test_bad_data_sections_are_one_line(data, stages, message):
    with pytest.raises(ValueError, match=message) as err:
        from_dict(TrainConfig, {"data": data, **({"stages": stages} if stages else {})})
    assert "\n" not in str(err.value)


def test_a_blend_is_given_on_the_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("out: x\n")
    cfg = load_yaml(TrainConfig, tmp_path / "c.yaml",
                    ["data.train=[{path: prepared/chat, weight: 0.7}, {path: prepared/web, weight: 0.3}]"])
    assert [(p.path, p.weight) for p in cfg.data.train] == [("prepared/chat", 0.7), ("prepared/web", 0.3)]


def test_another_data_order_at_the_same_seed(root, tmp_path):
    """`data.order_seed` changes which windows a run reads and nothing else; it defaults to the run's seed."""
    def first_batch(**data):
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        cfg = from_dict(PretrainConfig, {
            "preset": "micro-hybrid", "tokenizer": str(root / "parent"), "out": str(out),
            "data": {"train": str(root / "prepared" / "rivers"), **data}, "seed": 3,
            "stages": [{"name": "s1", "steps": 1, "seq_len": 16, "micro_batch": 2}], "bf16": False})
        return next(PretrainTrainer(cfg, progress=False)._dataset(0)).tokens

    assert torch.equal(first_batch(), first_batch(order_seed=3))
    assert not torch.equal(first_batch(), first_batch(order_seed=4))
    with pytest.raises(ValueError, match=r"data.order_seed: must be >= 0, got -1"):
        from_dict(PretrainConfig, {"data": {"order_seed": -1}})
