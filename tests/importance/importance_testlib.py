# SPDX-License-Identifier: Apache-2.0
"""Helpers for the importance tests: micro parents (hybrid and Llama-family), planted units, a tiny tokenizer.

Imported by the test modules as `from importance_testlib import ...` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from nemotron_elastic.config.model import ModelConfig
from nemotron_elastic.model import HybridLM

# every block type, 3 Mamba groups of 2 heads, GQA (3 query heads per KV group), biases everywhere
HYBRID = ModelConfig(
    pattern="M-*M-*", vocab_size=61, hidden_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=4,
    intermediate_size=20, mamba_num_heads=6, mamba_head_dim=4, mamba_n_groups=3, ssm_state_size=3, chunk_size=4,
    attention_bias=True, mlp_bias=True, mamba_proj_bias=True,
)  # fmt: skip
# Llama family: RoPE, gated SiLU MLP, tied embeddings, GQA
LLAMA = ModelConfig(
    family="llama", pattern="*-*-", vocab_size=61, hidden_size=24, num_attention_heads=6, num_key_value_heads=3,
    head_dim=4, rope_theta=500.0, intermediate_size=20, mlp_gated=True, mlp_activation="silu",
    tie_word_embeddings=True,
)  # fmt: skip
# Llama-layout families: Qwen3 (q/k norms, biases) with yarn RoPE; Mistral (window 5) with dynamic RoPE beyond
# max_position_embeddings 8 (token_ids has 13 columns, the depth test 9)
QWEN3_YARN = replace(
    LLAMA, family="qwen3", attention_qk_norm=True, attention_bias=True,
    rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4,
                     "rope_theta": 500.0},
)  # fmt: skip
MISTRAL_DYNAMIC = replace(
    LLAMA, family="mistral", sliding_window=5, max_position_embeddings=8,
    rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500.0},
)  # fmt: skip
CONFIGS = {"hybrid": HYBRID, "llama": LLAMA, "qwen3-yarn": QWEN3_YARN, "mistral-dynamic": MISTRAL_DYNAMIC}
TOL = 1e-10


def make_parent(cfg: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> HybridLM:
    """A random parent whose every term shows in the logits: matrices with std 1/sqrt(fan_in) (so attention
    is not uniform and heads differ), constant-initialised tensors moved by N(0, 0.3)."""
    torch.manual_seed(seed)
    model = HybridLM(cfg)
    model.init_weights()
    model = model.to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5)
            elif name.endswith(("A_log", ".D", "dt_bias", "norm.weight", "bias")):
                p.add_(0.3 * torch.randn_like(p))
    return model


def token_ids(cfg: ModelConfig, rows: int = 3, cols: int = 13, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (rows, cols), generator=torch.Generator().manual_seed(seed))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    d = (a.double() - b.double()).abs()
    return f"max abs diff {d.max().item():.3e}, mean {d.mean().item():.3e}"


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = TOL, what: str = "logits") -> None:
    diff = (a.double() - b.double()).abs().max().item()
    assert diff <= atol, f"{what}: {max_diff(a, b)} > atol {atol}"


def layers_of(cfg: ModelConfig, char: str) -> list[int]:
    return [i for i, c in enumerate(cfg.pattern) if c == char]


def tiny_tokenizer(vocab_size: int):
    """A byte-level BPE trained in milliseconds on a few sentences, with an `<eos>` special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def write_text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


SAMPLE_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair. "
) * 6
