# SPDX-License-Identifier: Apache-2.0
"""Assistant masks of chat sources (data/chat.py, data/shards.py): the masked tokens are exactly what the
assistant says (reasoning, content, end of turn) for prefix-stable templates, templates without a generation
prompt, templates that are not prefix-stable and the plain transcript; `.mask` files are verified like
`.bin` files; a prepared source folder opens on its own (`open_source`)."""

import json
import shutil

import numpy as np
import pytest

from nemotron_elastic.config.prepare import PrepareConfig
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.data.prepare import prepare
from nemotron_elastic.data.shards import PREPARED_FORMAT, Shard, list_sources, open_source
from nemotron_elastic.data.tokenizer import encode_batch, tokenizer_hash
from nemotron_elastic.io import load_tokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m.get('reasoning') %}<think>{{ m['reasoning'] }}"
          "</think>\n{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NO_PROMPT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"  # no generation prompt
# Reasoning only on the last turn (as Qwen3 does): rendering a prefix shows a reasoning the whole hides.
LAST_REASONING = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m.get('reasoning') and loop.last %}"
                  "<think>{{ m['reasoning'] }}</think>\n{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
REWRITES = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | upper }}\n{% endfor %}"

CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {i}?"},
          {"role": "assistant", "content": f"Answer {i}.", "reasoning": f"thinking {i}"},
          {"role": "user", "content": "And the other one?"}, {"role": "assistant", "content": f"Second {i}."}]
         for i in range(7)]


def tokenizer_dir(small_bpe, root, template):
    """A copy of the small BPE with ChatML's special tokens and `template` (None: no chat template)."""
    _, plain = small_bpe
    folder = root / "tok"
    shutil.copytree(plain, folder)
    tok = load_tokenizer(folder, required=True)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = template
    tok.save_pretrained(str(folder))
    return folder


def prepared(tmp_path, small_bpe, template, chats=CHATS, **over):
    """Prepare `chats` (all in training) with `template`; returns (tokenizer, opened source)."""
    folder = tokenizer_dir(small_bpe, tmp_path, template)
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    cfg = from_dict(PrepareConfig, {"sources": [{"name": "chat", "path": str(tmp_path / "chat.jsonl"),
                                                 "format": "messages"}],
                                    "heldout_fraction": 0.0, "shard_documents": 3, **over})
    prepare(cfg, folder, tmp_path / "out", progress=False)
    return load_tokenizer(folder, required=True), open_source(tmp_path / "out" / "chat", verify=True)


def documents(source):
    """[(tokens, mask)] of every training document, EOS included."""
    out = []
    for shard in source.train:
        for i in range(len(shard)):
            ends = shard.ends
            start = ends[i - 1] if i else 0
            out.append((shard.document(i).tolist(), np.asarray(shard.mask[start : ends[i]]).tolist()))
    return out


def masked_runs(tok, ids, mask):
    """The decoded text of each maximal run of masked tokens."""
    runs, current = [], []
    for token, bit in zip(ids + [None], mask + [0]):
        if bit:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs


def test_masks_cover_the_assistant_output_of_a_chat_template(tmp_path, small_bpe):
    tok, source = prepared(tmp_path, small_bpe, CHATML)
    assert source.mask and source.format == "messages" and source.tokenizer == tokenizer_hash(tok)
    assert (source.name, source.vocab_size, source.eos_token_id) == ("chat", len(tok), tok.eos_token_id)
    done = json.loads((tmp_path / "out" / "chat" / "done.json").read_text())
    assert done["prepared_format"] == PREPARED_FORMAT and done["mask"] is True and done["format"] == "messages"
    assert list_sources(tmp_path / "out") == ["chat"]
    docs = documents(source)
    rendered = [tok.apply_chat_template(c, tokenize=False) for c in CHATS]
    assert [ids for ids, _ in docs] == [ids + [tok.eos_token_id] for ids in encode_batch(tok, rendered)]
    for i, (ids, mask) in enumerate(docs):
        assert mask[-1] == 0  # the EOS separator
        assert masked_runs(tok, ids, mask) == [f"<think>thinking {i}</think>\nAnswer {i}.<|im_end|>",
                                               f"Second {i}.<|im_end|>"]
        unmasked = tok.decode([t for t, bit in zip(ids, mask) if not bit])
        assert f"Be brief.<|im_end|>\n<|im_start|>user\nQuestion {i}?<|im_end|>\n<|im_start|>assistant\n" in unmasked
        assert "Answer" not in unmasked and "Second" not in unmasked
    shard = source.train[0]
    assert shard.mask.dtype == np.uint8 and shard.mask.shape == shard.tokens.shape


def test_templates_without_a_generation_prompt_or_not_prefix_stable_and_transcripts(tmp_path, small_bpe):
    tok, source = prepared(tmp_path / "a", small_bpe, NO_PROMPT, CHATS[:2])
    for i, (ids, mask) in enumerate(documents(source)):  # role headers stay unmasked
        assert masked_runs(tok, ids, mask) == [f"Answer {i}.", f"Second {i}."]
    tok, source = prepared(tmp_path / "b", small_bpe, LAST_REASONING, CHATS[:2])
    for i, (ids, mask) in enumerate(documents(source)):  # found by their texts
        assert masked_runs(tok, ids, mask) == [f"Answer {i}.", f"Second {i}."]
    with pytest.warns(UserWarning, match="no chat template"):
        tok, source = prepared(tmp_path / "c", small_bpe, None, CHATS[:2])
    for i, (ids, mask) in enumerate(documents(source)):
        assert [run.strip() for run in masked_runs(tok, ids, mask)] == [f"thinking {i}", f"Answer {i}.", f"Second {i}."]
    with pytest.raises(ValueError, match="source chat: cannot find the assistant's turns") as err:
        prepared(tmp_path / "d", small_bpe, REWRITES, CHATS[:2])
    assert "\n" not in str(err.value)


def test_mask_files_are_verified_and_source_folders_open_on_their_own(tmp_path, small_bpe):
    _, source = prepared(tmp_path, small_bpe, CHATML, num_proc=2)  # worker processes compute masks too
    folder = tmp_path / "out" / "chat"
    assert [s.path.name for s in source.train] == ["train-00000", "train-00001", "train-00002"] and not source.heldout
    mask = folder / "train-00001.mask"
    original = mask.read_bytes()
    data = bytearray(original)
    data[5] ^= 1
    mask.write_bytes(bytes(data))
    Shard(folder / "train-00001", verify=False)  # sizes only
    with pytest.raises(ValueError, match="train-00001.mask: its bytes do not match"):
        open_source(folder, verify=True)
    mask.write_bytes(bytes(data[:-1]))
    with pytest.raises(ValueError, match="train-00001.mask: .* truncated or altered"):
        open_source(folder)
    mask.unlink()
    with pytest.raises(ValueError, match=r"train-00001.mask: missing \(the index says \d+ bytes\)"):
        Shard(folder / "train-00001", verify=False)
    mask.write_bytes(original)
    assert open_source(folder, verify=True).train[1].mask.sum() > 0
    (folder / "train-00002.idx").unlink()
    with pytest.raises(ValueError, match="train-00002.idx: no shard index"):
        open_source(folder)
    with pytest.raises(ValueError, match=r"not prepared \(run nemotron-elastic prepare\) or unfinished"):
        open_source(tmp_path)
    with pytest.raises(ValueError, match="no manifest.json"):
        list_sources(folder)
