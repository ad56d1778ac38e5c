# SPDX-License-Identifier: Apache-2.0
"""Zero-shot export of one sub-model: load a parent, cut it to a SubnetSpec, write a standalone checkpoint.

    export_subnet("runs/elastic", "out/half", budget=0.5)                  # the spec the router trained for 0.5
    export_subnet("runs/parent", "out/small", spec="spec.json", fmt="hf")  # a hand-written spec

The parent may be a native folder, an HF folder, a GGUF file or an elastic checkpoint (`budget` needs the
last: its budgets.json / router give the spec). The written model is `slice_model(parent, spec)`:

- fmt="hf": the family's stock transformers folder (NemotronH / Llama / Qwen2 / Qwen3 / Mistral): every
  homogeneous spec (a Llama-family parent: whose kept blocks still pair up);
- fmt="puzzle": NVIDIA's heterogeneous NemotronH format (`checkpoint/puzzle.py`): NemotronH specs whose only
  per-layer axis is the MLP width;
- fmt="decilm": NVIDIA's heterogeneous Llama format (DeciLM / Llama-Nemotron, `checkpoint/decilm.py`): Llama
  specs with per-layer MLP widths that are multiples of 256, and any Llama depth cut;
- fmt="native": a native folder (config.yaml with per-layer widths, model.safetensors, tokenizer);
- fmt="auto" (default): the most widely loadable of those that express the spec exactly: stock, else Puzzle
  (NemotronH) or DeciLM (Llama), else an HF folder with our own modeling code (`remote_code/`, transformers with `trust_remote_code=True`
  only). `ENGINES` says which engines load each kind (docs/SERVING.md, "Engines").

A spec the requested format cannot express is refused in one line naming the axis that prevents it.

Never a checkpoint that computes a different function: before the output folder is renamed into place, the
written files are loaded back (by transformers for HF) and their logits on a probe batch are compared with
the sliced native model (`verify=True`), on `device` in `dtype` (default float32), within a tolerance that
grows with the dtype's precision (`probe_tolerance`). Bad input fails with one ValueError line naming the field,
before anything is written; the output folder only appears when complete (see `atomic_output_dir`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .checkpoint.decilm import decilm_blocker, write_decilm
from .checkpoint.elastic import budget_spec, is_elastic
from .checkpoint.hf import hf_export_kind, write_hf
from .checkpoint.load import load_model
from .checkpoint.native import write_native
from .checkpoint.puzzle import puzzle_blocker, write_puzzle
from .config.spec import SubnetSpec, resolve_spec
from .io import atomic_output_dir, check_output_dir, load_tokenizer, save_tokenizer
from .subnet.slicing import slice_model

SPEC_FILE = "subnet.json"  # written next to the weights: which sub-model of which parent this is
PROBE_SHAPE = (2, 12)  # tokens of the verification batch (small: the check must be cheap next to the save)
PROBE_RTOL = 1e-3  # max abs logit diff allowed, relative to max(1, max |logit|); a wrong tensor is O(1) off
# In a low-precision dtype the two implementations round differently at every op: the allowed difference is
# this many units of the dtype's precision (eps) when that is above PROBE_RTOL. bfloat16 (eps 2**-7): 6.3e-2;
# float16 (eps 2**-10): 7.8e-3; float32 and float64 stay at PROBE_RTOL.
PROBE_EPS_FACTOR = 8


FORMATS = ("auto", "hf", "puzzle", "decilm", "native")
# Which engines load each kind of export: only those whose loader was read for exactly that case
# (docs/SERVING.md, "Engines", lists what was read; no engine is run by the tests).
ENGINES = {
    "hf": "transformers (stock class), and engines that load the family's standard architecture "
          "(vLLM, llama.cpp: their NemotronH loaders were read)",
    "puzzle": "transformers (trust_remote_code=True) and vLLM (NemotronHPuzzleForCausalLM, --trust-remote-code); "
              "not llama.cpp (its converter maps this architecture to its MoE variant)",
    "decilm": "transformers (trust_remote_code=True) and vLLM (DeciLMForCausalLM, --trust-remote-code); "
              "not llama.cpp (its graph drops the attention of a layer without an MLP, and sizes heads as "
              "hidden / heads)",
    "hf-remote-code": "transformers only (trust_remote_code=True): no engine's format has per-layer attention "
                      "or Mamba heads",
    "native": "nemotron-elastic only (generate, evaluate, serve)",
}  # fmt: skip
_AXES = {"mlp": "mlp_sizes_per_layer", "attention_heads": "attention_heads_per_layer",
         "mamba_heads": "mamba_heads_per_layer"}  # fmt: skip


@dataclass(frozen=True)
class ExportResult:
    """What `export_subnet` wrote.

    Attributes:
        path: the output folder.
        spec: the sub-model (bound to the parent's config).
        kind: "native", "hf" (the family's stock class), "puzzle" (NVIDIA's per-layer NemotronH format),
            "decilm" (NVIDIA's per-layer Llama format) or "hf-remote-code" (own modeling code).
        num_parameters: parameters of the exported model (a tied head counted once).
    """

    path: Path
    spec: SubnetSpec
    kind: Literal["native", "hf", "puzzle", "decilm", "hf-remote-code"]
    num_parameters: int

    @property
    def engines(self) -> str:
        """One line: which engines load what was written."""
        return ENGINES[self.kind]


def _per_layer_axes(config) -> list[str]:
    """The axes on which the layers of `config` differ."""
    return [axis for axis, sizes in _AXES.items() if len(set(getattr(config, sizes)())) > 1]


def export_kind(config, fmt: str) -> str:
    """The kind `fmt` writes for the (sliced) `config`: "hf", "puzzle", "decilm", "hf-remote-code" or "native".

    Raises:
        ValueError: `fmt` cannot express `config`; one line naming the axis that prevents it.
    """
    if fmt == "native":
        return "native"
    per_layer = _per_layer_axes(config)
    stock = None if per_layer else hf_export_kind(config, allow_remote_code=True)
    if fmt == "hf" and stock != "stock":
        why = (f"per-layer widths on axis {', '.join(per_layer)}" if per_layer
               else "a depth (layers) cut that splits a decoder layer's attention / MLP pair")  # fmt: skip
        raise ValueError(f"format hf: the stock {config.family} class cannot express {why} "
                         "(--format auto picks a format that can)")  # fmt: skip
    # per-layer formats: NVIDIA's for NemotronH (Puzzle) and for Llama (DeciLM); at most one can express a config
    blockers = {"puzzle": puzzle_blocker(config), "decilm": decilm_blocker(config)}
    if blockers.get(fmt):
        raise ValueError(f"format {fmt}: cannot express {blockers[fmt]} (--format auto picks a format that can)")
    if fmt in blockers:
        return fmt
    if stock == "stock":
        return "hf"
    return next((kind for kind, why in blockers.items() if why is None), "hf-remote-code")


def _check_request(
    model_dir: Path, out_dir: Path, spec: Any, budget: float | None, fmt: str, overwrite: bool
) -> None:
    """Argument errors that need no model: raised before anything is loaded or written."""
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if spec is not None and budget is not None:
        raise ValueError("spec / budget: pass one of them, not both")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)):
            raise ValueError(f"budget: expected a number, got {budget!r}")
        if not (model_dir.is_dir() and is_elastic(model_dir)):
            raise ValueError(
                f"budget: {model_dir} is not an elastic checkpoint (no budgets.json / router.json); "
                "train one first or pass a spec"
            )
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError(f"out: {out_dir} is the model folder itself; choose another output folder")
    check_output_dir(out_dir, overwrite)


def probe_tolerance(dtype: torch.dtype) -> float:
    """The verification's allowed max abs logit difference, relative to max(1, max |logit|), in `dtype`."""
    return max(PROBE_RTOL, PROBE_EPS_FACTOR * torch.finfo(dtype).eps)


@torch.no_grad()
def _expected_logits(reference: torch.nn.Module, device: torch.device | str, dtype: torch.dtype):
    """(probe ids, the reference's logits) on `device` in `dtype`. `reference` is moved and cast in place: its
    files are written, nothing needs it after this (a copy would double a large model on the host)."""
    ref = reference.to(device=device, dtype=dtype)
    ids = torch.randint(0, ref.config.vocab_size, PROBE_SHAPE, generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    return ids, ref.eval()(ids)


@torch.no_grad()
def _verify(folder: Path, kind: str, ids: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """Load what was written and compare its logits on `ids` with the sliced model's `expected` ones, on the
    same device in `dtype`. The sliced model is gone by now: the two are never in memory together.

    Raises:
        RuntimeError: the written checkpoint computes a different function (a bug, never bad input).
    """
    device = ids.device
    if kind == "native":
        loaded = load_model(folder, dtype=dtype, device=device)
        got = loaded(ids)
    else:
        if kind == "hf":
            from transformers import AutoModelForCausalLM as cls
        elif kind == "puzzle":  # the modeling code copied into the folder, imported from this package
            from .checkpoint.remote_code.modeling_elastic_hybrid import NemotronHPuzzleForCausalLM as cls
        elif kind == "decilm":
            from .checkpoint.remote_code.modeling_decilm import DeciLMForCausalLM as cls
        else:  # the same files as the ones copied into the folder, imported from this package
            from .checkpoint.remote_code.modeling_elastic_hybrid import (
                ElasticHybridForCausalLM as cls,  # deferred: imports transformers
            )
        loaded = cls.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        got = loaded(ids, use_cache=False).logits
    diff = (got.double() - expected.double()).abs().max().item()
    limit = probe_tolerance(dtype) * max(1.0, expected.abs().max().item())
    if not diff <= limit:  # also catches NaN
        name = str(dtype).removeprefix("torch.")
        raise RuntimeError(
            f"export check failed: the written {kind} checkpoint's logits differ from the sliced model by {diff:.3e} "
            f"(> {limit:.3e}, {name} on {device}); nothing was written"
        )


def export_subnet(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: SubnetSpec | dict | str | os.PathLike | None = None,
    budget: float | None = None,
    fmt: Literal["auto", "hf", "puzzle", "decilm", "native"] = "auto",
    overwrite: bool = False,
    verify: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> ExportResult:
    """Cut one sub-model out of a parent and write it as a standalone checkpoint.

    Args:
        model_dir: the parent: native folder, HF folder, .gguf file or elastic checkpoint.
        out_dir: the folder to create (atomically).
        spec: the sub-model: a SubnetSpec of this parent, a dict or a JSON file in the SubnetSpec schema;
            None (with no budget) exports the whole parent.
        budget: instead of a spec, a budget of an elastic checkpoint (its trained spec, or the router's
            choice between two trained budgets).
        fmt: "auto" (stock, else Puzzle / DeciLM, else own modeling code), "hf" (stock only), "puzzle",
            "decilm" or "native".
        overwrite: replace an existing non-empty `out_dir` (only once the new folder is complete).
        verify: reload the written files and check their logits against the sliced model before the rename.
        device, dtype: where and in which dtype the check runs (None: float32). The model is sliced and
            written on the CPU in its stored dtype either way.

    Returns:
        An ExportResult (folder, spec, kind written, parameter count).

    Raises:
        ValueError: bad spec / budget / format (one line naming the field), a budget on a non-elastic model,
            or a spec the format cannot express (one line naming the axis).
        FileExistsError: `out_dir` is not empty and `overwrite` is False.
        FileNotFoundError: the model or spec path does not exist.
    """
    model_dir, out = Path(model_dir), Path(out_dir)
    _check_request(model_dir, out, spec, budget, fmt, overwrite)
    parent = load_model(model_dir)
    if budget is not None:
        subnet = budget_spec(model_dir, float(budget), parent.config)
    else:
        subnet = resolve_spec(parent.config, spec)
    kind = export_kind(subnet.config(), fmt)  # before slicing: a refused format costs no copy of the weights
    sub = slice_model(parent, subnet).eval()
    del parent  # the sub-model holds copies of the kept weights
    tokenizer = load_tokenizer(model_dir)
    info = {
        "parent": str(model_dir),
        "budget": budget,
        "spec": subnet.to_dict(),
        "format": kind,
        "num_parameters": sub.num_parameters(),
    }
    with atomic_output_dir(out, overwrite) as tmp:
        if kind == "native":  # the files of save_native, written here so that this block is the one rename
            write_native(tmp, sub, tokenizer)
        elif kind in ("puzzle", "decilm"):
            (write_puzzle if kind == "puzzle" else write_decilm)(sub, tmp)
            save_tokenizer(tokenizer, tmp)
        else:
            write_hf(sub, tmp, tokenizer, "stock" if kind == "hf" else "remote_code")
        (tmp / SPEC_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if verify:
            ids, expected = _expected_logits(sub, device, dtype or torch.float32)
            del sub  # before the written model is loaded: a large model is never in memory twice
            _verify(tmp, kind, ids, expected, dtype or torch.float32)
    return ExportResult(out, subnet, kind, info["num_parameters"])
