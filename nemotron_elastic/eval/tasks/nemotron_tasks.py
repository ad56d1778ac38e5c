# SPDX-License-Identifier: Apache-2.0
"""Datasets of the shipped lm-eval tasks (`custom_dataset:` in the YAML files beside this one).

lm-eval calls each function with the task's metadata (`--metadata` JSON, plus the model args when the
CLI builds the task manager) and expects {split: datasets.Dataset}. The documents are the default
corpus' held-out split unless the metadata names `eval_data` (a file or folder `load_documents` reads).

This module is loaded by lm-eval from its file path, whenever a YAML here is. Importing the model module
below registers `nemotron_elastic` with lm-eval at that moment, so even the stock `lm_eval` command knows
the model when it is given one of these YAML files by path (it reads them before it builds the model).
"""

from __future__ import annotations

from typing import Any

# absolute imports: lm-eval loads this file by its path, outside the package
from nemotron_elastic.eval import lm_eval_model  # noqa: F401  (registers the model, see above)
from nemotron_elastic.eval.texts import cloze_items, eval_documents, passages
from nemotron_elastic.io import import_extra


def _dataset(texts: list[str], task: str) -> dict[str, Any]:
    datasets = import_extra("datasets", f"the lm-eval task {task}")  # lm-eval brings it; said clearly if not
    if not texts:
        raise ValueError(f"{task}: the documents give no items")
    return {"test": datasets.Dataset.from_list([{"text": t} for t in texts])}


def heldout_passages(**metadata: Any) -> dict[str, Any]:
    """Held-out passages (whole paragraphs, at most 2000 characters, sources interleaved)."""
    return _dataset(passages(eval_documents(metadata.get("eval_data"))), "nemotron_heldout_ppl")


def heldout_cloze(**metadata: Any) -> dict[str, Any]:
    """LAMBADA-style items from the held-out documents (see `texts.cloze_items`)."""
    return _dataset(cloze_items(eval_documents(metadata.get("eval_data"))), "nemotron_heldout_cloze")
