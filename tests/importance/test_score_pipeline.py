# SPDX-License-Identifier: Apache-2.0
"""`score_model` end to end on a tiny native parent: ranking.json + a loadable sorted checkpoint with the same
logits; bad input fails with one clear line and writes nothing."""

import dataclasses
import json
import os

import pytest
import torch
from importance_testlib import HYBRID, SAMPLE_TEXT, make_parent, tiny_tokenizer, write_text

from nemotron_elastic.checkpoint import load_model, save_native
from nemotron_elastic.importance import Ranking
from nemotron_elastic.importance.pipeline import RANKING_NAME, load_ranking, score_model
from nemotron_elastic.io import WEIGHTS_NAME

SMALL = {
    "samples": 4,
    "seq_len": 16,
    "depth_samples": 2,
    "depth_seq_len": 8,
    "batch_size": 2,
    "progress": False,
}


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory):
    """A float32 hybrid parent with a 300-token BPE tokenizer, saved as a native checkpoint."""
    tokenizer = tiny_tokenizer(300)
    cfg = dataclasses.replace(HYBRID, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    model = make_parent(cfg, dtype=torch.float32)
    return save_native(model, tmp_path_factory.mktemp("parent") / "model", tokenizer)


@pytest.fixture
def data(tmp_path):
    return write_text(tmp_path / "data", "a.txt", SAMPLE_TEXT)


def test_end_to_end(parent_dir, data, tmp_path):
    out = score_model(parent_dir, data, tmp_path / "scored", **SMALL)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.yaml", WEIGHTS_NAME, RANKING_NAME, "tokenizer.json", "tokenizer_config.json"]
    )
    parent, scored = load_model(parent_dir), load_model(out)
    ids = torch.randint(0, parent.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = parent(ids), scored(ids)
    diff = (a - b).abs().max().item()
    assert diff <= 1e-4, f"sorted checkpoint changed the logits: max abs diff {diff:.3e}"
    assert not torch.equal(parent.embeddings.weight, scored.embeddings.weight)  # it was really permuted

    ranking = load_ranking(out)
    data_json = json.loads((out / RANKING_NAME).read_text())
    assert data_json["meta"]["reordered"] is True and data_json["meta"]["samples"] == 4
    assert set(data_json) >= {"hidden", "mlp", "attention_heads", "mamba_heads", "mamba_head_dim", "depth"}
    assert sorted(ranking.depth.drop_order) == list(range(HYBRID.num_layers))
    assert len(ranking.depth.step_scores) == HYBRID.num_layers - 1
    assert Ranking.from_dict(ranking.to_dict()) == ranking  # JSON round trip
    # the sorted hidden scores: the order applied to the scores is non-increasing
    scores = [ranking.hidden.scores[i] for i in ranking.hidden.order]
    assert scores == sorted(scores, reverse=True)


def test_deterministic(parent_dir, data, tmp_path):
    a = score_model(parent_dir, data, tmp_path / "a", **SMALL)
    b = score_model(parent_dir, data, tmp_path / "b", **SMALL)
    assert json.loads((a / RANKING_NAME).read_text()) == json.loads((b / RANKING_NAME).read_text())


def _no_leftovers(folder, out):
    assert not out.exists(), f"{out} was written"
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{out.name}")], (
        "temporary folder left behind"
    )


@pytest.mark.parametrize(
    "make_data, message",
    [
        (lambda d: write_text(d, "empty.txt", ""), "no usable text"),
        (lambda d: (d / "bin.txt").write_bytes(b"\xff\xfe\xfa") and d / "bin.txt", "not UTF-8"),
        (lambda d: write_text(d, "short.txt", "a few words"), "fewer than one sample"),
        (lambda d: d / "nothing_here", "no such data"),
    ],
)
def test_bad_data(parent_dir, tmp_path, make_data, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message) as err:
        score_model(parent_dir, make_data(tmp_path), out, **SMALL)
    assert "\n" not in str(err.value)
    _no_leftovers(tmp_path, out)


def test_model_folder_without_weights(parent_dir, data, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in parent_dir.iterdir():
        if p.name != WEIGHTS_NAME:
            (broken / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    with pytest.raises((ValueError, OSError), match=WEIGHTS_NAME) as err:
        score_model(broken, data, out, **SMALL)
    assert "\n" not in str(err.value)
    _no_leftovers(tmp_path, out)


def test_existing_output_is_kept(parent_dir, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        score_model(parent_dir, data, out, **SMALL)
    assert os.listdir(out) == ["keep.txt"]
    score_model(parent_dir, data, out, overwrite=True, **SMALL)
    assert (out / RANKING_NAME).is_file() and not (out / "keep.txt").exists()
