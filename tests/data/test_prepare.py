# SPDX-License-Identifier: Apache-2.0
"""`prepare` (data/prepare.py, data/shards.py): documents -> token shards equal to tokenizing directly, for
every source type; resume after a kill writes the same bytes; worker processes change nothing; bad input is
one line and leaves nothing half-written."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_testlib import SMALL_TEXTS

import nemotron_elastic.data.prepare as prepare_mod
from nemotron_elastic.cli import main
from nemotron_elastic.config.prepare import PrepareConfig
from nemotron_elastic.config.types import ConfigError, from_dict
from nemotron_elastic.data.prepare import heldout, prepare, transcript
from nemotron_elastic.data.shards import Shard
from nemotron_elastic.data.tokenizer import encode_batch
from nemotron_elastic.io import load_tokenizer

DOCS = [f"{text[: 40 + 7 * i]} (document {i})" for i, text in enumerate(SMALL_TEXTS * 6)]
CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {i}?"},
          {"role": "assistant", "content": f"Answer {i}.", "reasoning": f"thinking {i}"}] for i in range(9)]
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def tok_dirs(small_bpe, tmp_path_factory):
    """(plain tokenizer folder, one with a chat template)."""
    _, plain = small_bpe
    chat = tmp_path_factory.mktemp("chat-tok")
    for f in plain.iterdir():
        shutil.copy(f, chat / f.name)
    tok = load_tokenizer(chat, required=True)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(chat))
    return plain, chat


def sources(root):
    """One source of every type, each holding DOCS (or CHATS)."""
    (root / "texts").mkdir()
    for i, doc in enumerate(DOCS):
        (root / "texts" / f"{i:03d}.txt").write_text(doc)
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    pq.write_table(pa.table({"body": DOCS}), root / "docs.parquet")
    (root / "saved").mkdir()  # what datasets.save_to_disk writes: Arrow IPC stream files
    with pa.ipc.new_stream(str(root / "saved" / "data-00000-of-00001.arrow"), pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.table({"text": DOCS}))
    (root / "chat.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    return [{"name": "text", "path": str(root / "texts")}, {"name": "jsonl", "path": str(root / "docs.jsonl")},
            {"name": "parquet", "path": str(root / "docs.parquet"), "field": "body"},
            {"name": "arrow", "path": str(root / "saved")},
            {"name": "chat", "path": str(root / "chat.jsonl"), "format": "messages"}]


def config(srcs, **over):
    return from_dict(PrepareConfig, {"sources": srcs, "heldout_fraction": 0.2, "shard_documents": 5, **over})


def read_back(out, name):
    """Every document of a prepared source, in the source's order (train and held-out merged back)."""
    def split_docs(split):
        n, docs = 0, []
        while (out / name / f"{split}-{n:05d}.idx").is_file():
            shard = Shard(out / name / f"{split}-{n:05d}")
            docs += [shard.document(i).tolist() for i in range(len(shard))]
            n += 1
        return docs
    train, held = iter(split_docs("train")), iter(split_docs("heldout"))
    total = json.loads((out / name / "done.json").read_text())
    count = total["train"]["documents"] + total["heldout"]["documents"]
    return [next(held) if heldout(0, name, i, 0.2) else next(train) for i in range(count)]


def test_every_source_type_gives_the_tokens_of_direct_tokenization(tmp_path, tok_dirs):
    plain, chat = tok_dirs
    srcs = sources(tmp_path)
    manifest = prepare(config(srcs[:4]), plain, tmp_path / "out", progress=False)
    tok = load_tokenizer(plain, required=True)
    eos = tok.eos_token_id
    expected = [ids + [eos] for ids in encode_batch(tok, DOCS)]
    for name in ("text", "jsonl", "parquet", "arrow"):
        assert read_back(tmp_path / "out", name) == expected, name
        entry = manifest["sources"][name]
        assert entry["train"]["documents"] + entry["heldout"]["documents"] == len(DOCS)
        assert 0 < entry["heldout"]["documents"] < len(DOCS) / 2
    assert manifest["tokenizer"] and manifest["config"]["sources"][2]["field"] == "body"
    # conversations go through the tokenizer's own chat template
    prepare(config(srcs[4:]), chat, tmp_path / "chat-out", progress=False)
    ctok = load_tokenizer(chat, required=True)
    rendered = [ctok.apply_chat_template(c, tokenize=False) for c in CHATS]
    assert rendered[0].startswith("<|system|>Be brief.")
    assert read_back(tmp_path / "chat-out", "chat") == [ids + [eos] for ids in encode_batch(ctok, rendered)]


def test_without_a_template_conversations_become_a_transcript_with_a_warning(tmp_path, tok_dirs):
    plain, _ = tok_dirs
    srcs = sources(tmp_path)
    with pytest.warns(UserWarning, match="no chat template"):
        prepare(config(srcs[4:], heldout_fraction=0.0), plain, tmp_path / "out", progress=False)
    tok = load_tokenizer(plain, required=True)
    text = transcript(CHATS[0])
    assert text == "system: Be brief.\n\nuser: Question 0?\n\nassistant (reasoning): thinking 0\n\nassistant: Answer 0."
    assert Shard(tmp_path / "out" / "chat" / "train-00000").document(0).tolist()[:-1] == encode_batch(tok, [text])[0]


def test_a_killed_prepare_resumes_to_the_same_bytes_and_workers_change_nothing(tmp_path, tok_dirs, monkeypatch):
    plain, _ = tok_dirs
    srcs = sources(tmp_path)[:2]
    prepare(config(srcs), plain, tmp_path / "straight", progress=False)
    real, written = prepare_mod.write_shard, []

    def dying(path, *args, **kwargs):
        if len(written) == 3:
            raise KeyboardInterrupt("killed")
        written.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prepare_mod, "write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(config(srcs), plain, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(prepare_mod, "write_shard", real)
    prepare(config(srcs), plain, tmp_path / "resumed", progress=False)
    prepare(config(srcs, num_proc=2), plain, tmp_path / "workers", progress=False)
    files = sorted(p.relative_to(tmp_path / "straight") for p in (tmp_path / "straight").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".bin"]) > 4
    for other in ("resumed", "workers"):
        assert sorted(p.relative_to(tmp_path / other) for p in (tmp_path / other).rglob("*") if p.is_file()) == files
        for f in files:
            if f.name not in ("prepare.json", "manifest.json"):
                assert (tmp_path / other / f).read_bytes() == (tmp_path / "straight" / f).read_bytes(), (other, f)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tok_dirs, capsys):
    plain, _ = tok_dirs
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}) + "\n"
                                        + json.dumps({"messages": [{"role": "user", "content": 3}]}) + "\n"
                                        + json.dumps({"messages": CHATS[0]}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="sources: gone: .* does not exist"):
        prepare(config([{"name": "gone", "path": str(tmp_path / "missing.jsonl")}]), plain, out, progress=False)
    assert not out.exists()
    strict = config([{"name": "chat", "path": str(tmp_path / "bad.jsonl"), "format": "messages", "strict": True}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: unknown role 'wizard'"), pytest.warns(UserWarning):
        prepare(strict, plain, tmp_path / "strict", progress=False)
    with pytest.warns(UserWarning):
        manifest = prepare(config([{"name": "chat", "path": str(tmp_path / "bad.jsonl"), "format": "messages"}],
                                  heldout_fraction=0.0), plain, tmp_path / "lenient", progress=False)
    assert manifest["sources"]["chat"]["skipped"] == 2 and manifest["sources"]["chat"]["train"]["documents"] == 1
    with pytest.raises(ValueError, match="prepared with another config or tokenizer"):
        prepare(config([{"name": "chat", "path": str(tmp_path / "bad.jsonl"), "format": "messages"}]), plain,
                tmp_path / "lenient", progress=False)
    with pytest.raises(ConfigError, match=r"sources\[0\].name: '../x' is not a plain folder name"):
        config([{"name": "../x", "path": "p"}])
    with pytest.raises(ConfigError, match=r"heldout_fraction: must be in \[0, 1\)"):
        config([{"name": "a", "path": "p"}], heldout_fraction=1.0)
    # a truncated shard is detected against its index
    shard = tmp_path / "lenient" / "chat" / "train-00000"
    shard.with_suffix(".bin").write_bytes(shard.with_suffix(".bin").read_bytes()[:-2])
    with pytest.raises(ValueError, match="truncated or altered"):
        Shard(shard)
    (tmp_path / "data.yaml").write_text("sources: [{name: x, path: " + str(tmp_path / "nope") + "}]\n")
    assert main(["prepare", "--config", str(tmp_path / "data.yaml"), "--tokenizer", str(plain), "--out",
                 str(tmp_path / "cli"), "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "cli").exists()
