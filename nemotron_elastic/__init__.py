# SPDX-License-Identifier: Apache-2.0
"""nemotron-elastic: many-in-one elastic LLMs (Nemotron Elastic, arXiv 2511.16664).

One trained parent (a hybrid Mamba2 / attention model such as Nemotron-H, or a Llama-family Transformer)
becomes a single checkpoint holding nested sub-models, chosen by a budget-conditioned router, trained
together by distillation from the frozen parent, and sliced out zero-shot as standard HF checkpoints.

Stable API:

    from nemotron_elastic import load_model, SubnetSpec, slice_model
    model = load_model("runs/parent")           # native dir, HF dir (NemotronH / Llama) or .gguf file
    logits = model(input_ids)                   # (B, T, V)
    spec = SubnetSpec.from_dict({"hidden": 192, "mlp": 512}, model.config)
    small_logits = model(input_ids, subnet=spec)   # the sub-model inside the parent (sliced forward)
    small = slice_model(model, spec)            # a standalone smaller model, same function

Glossary: parent, budget, SubnetSpec, ranking, masks, slice (docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("nemotron_elastic.checkpoint", "load_model"),
    "load_tokenizer": ("nemotron_elastic.io", "load_tokenizer"),
    "save_native": ("nemotron_elastic.checkpoint", "save_native"),
    "HybridLM": ("nemotron_elastic.model", "HybridLM"),
    "ModelConfig": ("nemotron_elastic.config", "ModelConfig"),
    "SubnetSpec": ("nemotron_elastic.config.spec", "SubnetSpec"),
    "slice_model": ("nemotron_elastic.subnet.slicing", "slice_model"),
}


def __getattr__(name: str):
    # lazy: `import nemotron_elastic` (and the CLI's --help) must not pay for importing torch
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'nemotron_elastic' has no attribute {name!r}")


__all__ = list(_LAZY)
