# SPDX-License-Identifier: Apache-2.0
"""Tokenizers: a byte-level BPE trained in seconds for small models, loading, and a content hash.

The BPE is GPT-2's design (byte-level pre-tokenizer, so every string round-trips and there is no unknown
token) trained with HF `tokenizers` (https://huggingface.co/docs/tokenizers). It is saved as a
transformers folder (`tokenizer.json` + `tokenizer_config.json`), so
`transformers.AutoTokenizer.from_pretrained(folder)` loads it and it can be saved with a model.

Special tokens: `<|endoftext|>` (id 0) is both EOS and BOS, as in GPT-2: token shards put it
between documents (shards.py); `<|pad|>` (id 1) pads batches and is never trained on. Encoding adds
no special tokens, so `decode(encode(text)) == text` for any text.

Training is deterministic: the same corpus gives the same `tokenizer_hash`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..io import atomic_output_dir, load_tokenizer

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)  # in id order: 0, 1
NUM_BYTES = 256  # the byte-level alphabet every BPE vocabulary starts from
TRAINING_FILE = "bpe_training.json"  # how the BPE in a folder was trained: lets `ensure_bpe` reuse it
DEFAULT_SOURCE = "default-corpus:train"


def train_bpe(
    documents: Iterable[str],
    vocab_size: int,
    out_dir: str | Path | None = None,
    min_frequency: int = 2,
    source: str = "",
) -> Any:
    """Train a byte-level BPE on `documents` and optionally save it as a transformers folder.

    Args:
        documents: training texts (any iterable; it is read once).
        vocab_size: the vocabulary size to reach, special tokens and the 256 bytes included. A corpus
            with too few distinct pairs stops earlier, so check `len(tokenizer)`.
        out_dir: folder to write, atomically; an existing one is replaced only if it is empty or was
            written by `train_bpe`. None keeps the tokenizer in memory only.
        min_frequency: a pair must occur this often to be merged.
        source: a note on the training data, stored in `bpe_training.json` for `ensure_bpe`.

    Returns:
        A `transformers.PreTrainedTokenizerFast` with EOS = BOS = `<|endoftext|>`, PAD = `<|pad|>`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    smallest = NUM_BYTES + len(SPECIAL_TOKENS) + 1
    if vocab_size < smallest:
        raise ValueError(
            f"BPE vocab_size must be at least {smallest} (256 bytes + special tokens), got {vocab_size}"
        )
    if vocab_size > 2**32 - 1:
        raise ValueError(f"BPE vocab_size must fit in uint32, got {vocab_size}")
    backend = Tokenizer(models.BPE())
    # add_prefix_space=False keeps the encoding lossless: decode(encode(text)) == text.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # all 256 bytes up front, so text with bytes unseen in training still encodes
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(documents, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,  # the cleanup rewrites " ." to "." and would break round trips
    )
    if out_dir is not None:
        folder = Path(out_dir)
        # Replace only what this function wrote before: never a model or data folder given by mistake.
        if folder.exists() and not (folder / TRAINING_FILE).is_file() and any(folder.iterdir()):
            raise ValueError(f"{folder}: exists and is not a BPE folder written by train_bpe; choose another")

        record = {"vocab_size": vocab_size, "min_frequency": min_frequency, "source": source}
        with atomic_output_dir(out_dir, overwrite=True) as tmp:
            tokenizer.save_pretrained(str(tmp))
            (tmp / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return tokenizer


def tokenizer_hash(tokenizer: Any) -> str:
    """A short content hash of a tokenizer: same vocabulary, merges and special tokens -> same hash.

    Args:
        tokenizer: a transformers fast tokenizer or a raw `tokenizers.Tokenizer`.

    Returns:
        The first 16 hex digits of the SHA-256 of its serialized JSON.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):
        raise ValueError(f"{type(tokenizer).__name__}: not a fast tokenizer (no tokenizer.json to hash)")
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()[:16]


def encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (the Rust batch encoder when there is one).

    Args:
        tokenizer: a transformers tokenizer or a raw `tokenizers.Tokenizer`.
        texts: the texts.

    Returns:
        One list of ids per text.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if hasattr(backend, "encode_batch"):  # parallel over texts, and no max-length warnings for long documents
        return [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def ensure_bpe(
    out_dir: str | Path,
    vocab_size: int,
    documents: Callable[[], Iterable[str]],
    source: str = DEFAULT_SOURCE,
) -> Any:
    """The BPE in `out_dir` if it was trained with these settings, else a new one trained and saved there.

    Args:
        out_dir: the tokenizer folder (created, or replaced when its settings differ).
        vocab_size: vocabulary size to train.
        documents: returns the training documents (called only when a new BPE is trained).
        source: names the training data; a folder trained on another source is retrained.

    Returns:
        The tokenizer.
    """
    folder = Path(out_dir)
    try:
        record = json.loads((folder / TRAINING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if record is not None and record.get("vocab_size") == vocab_size and record.get("source") == source:
        return load_tokenizer(folder, required=True)
    return train_bpe(documents(), vocab_size, folder, source=source)
