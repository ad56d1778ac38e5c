# SPDX-License-Identifier: Apache-2.0
"""The lm-evaluation-harness model `nemotron_elastic`: one budget of an elastic checkpoint (or any model).

    nemotron-elastic-lm-eval --model nemotron_elastic \\
        --model_args path=runs/elastic/model,budget=0.5 --tasks nemotron_heldout_cloze

Model args: `path` (required: elastic checkpoint, native / HF folder or .gguf), `budget` (a trained budget
of an elastic checkpoint; none: the whole model), `spec` (a SubnetSpec JSON file instead of a budget),
`interpolate` (allow an untrained budget between two trained ones), `dtype`, `device`, `batch_size`
(requests or rolling windows per forward pass, default 16; "auto" is 16 too, nothing is probed; 1 scores
one request at a time), `max_length` (context; default the config's max_position_embeddings),
`max_gen_toks` (default 256). A model arg wins over lm-eval's CLI option of the same name (lm-eval's
`--batch_size` defaults to 1 and is passed to every model; giving it twice would otherwise fail).

The budget runs inside the loaded parent through `HybridLM.forward(subnet=...)` (the parent's weights
sliced to the spec, nothing copied), so evaluating three budgets loads the checkpoint once per process.
Scoring follows lm-eval's HFLM: a continuation is scored on the joint encoding of context + continuation,
left-truncated to `max_length + 1` tokens; rolling log-likelihoods use `get_rolling_token_windows` with
the BOS (else EOS) token as the first context. lm-eval 0.4.13 discovers no external models, so the
class is registered when this module is imported (`lm_eval_main.py` does that before lm-eval's CLI).

Batching (as HFLM): `loglikelihood` requests and the windows of `loglikelihood_rolling` (of all its texts
together) are sorted by descending input length, cut into batches of `batch_size` rows (on a CPU also at most
BATCH_TOKENS padded tokens: larger batches run slower there), right-padded and run
in one forward pass per batch; results come back in request order. The model is causal (attention masks
the future, the Mamba conv and scan only look back), so a row's real positions never see its padding;
only those positions' hidden states go through the LM head, and the log-softmax is taken in float32 (or
wider) in slices of at most LOGIT_ELEMENTS values, never a (batch, length, vocabulary) tensor (`token_scoring.py`). A batched result equals the one-at-a-time result
(batch_size=1) up to float rounding, and its greedy flag is the same (tests/eval/test_lm_eval_batching.py).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm.auto import tqdm

from ..checkpoint.load import load_model
from ..checkpoint.native import peek_config
from ..config.spec import SubnetSpec
from ..io import load_tokenizer
from ..model.batcher import ContinuousBatcher, SequenceRequest
from ..model.masks import ElasticMasks
from .targets import EvalTarget, resolve_targets
from .token_scoring import length_batches, score_rows

MODEL_NAME = "nemotron_elastic"
IGNORED_ARGS = ("max_batch_size", "trust_remote_code")  # passed by lm-eval's CLI to every model
DEFAULT_BATCH_SIZE = 16  # requests (or rolling windows) per forward pass


def _usable_device(device: str | None) -> str:
    """`device`, or "cpu" when it names an accelerator this machine lacks (lm-eval's CLI passes "cuda" by
    default; its HF model falls back the same way)."""
    device = device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            "%s: device %s is not available; running on cpu", MODEL_NAME, device
        )
        return "cpu"
    return device


def _target(path: str, config: Any, budget: Any, spec: Any, interpolate: Any) -> EvalTarget:
    """The sub-model the model args name: the whole model unless a budget or a spec is given."""
    if budget is None and spec is None:  # an elastic checkpoint too: its whole parent
        return EvalTarget("full", SubnetSpec.full(config))
    budgets = None if budget is None else [float(budget)]
    return resolve_targets(path, config, budgets, spec, bool(interpolate))[0]


@register_model(MODEL_NAME, "nemotron-elastic")
class NemotronElasticLM(TemplateLM):
    """lm-eval's LM interface over one sub-model of a HybridLM (see the module docstring for the args)."""

    def __init__(
        self,
        path: str | None = None,
        budget: float | None = None,
        spec: str | None = None,
        interpolate: bool = False,
        dtype: str | None = None,
        device: str | None = "cpu",
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(kwargs) - set(IGNORED_ARGS))
        if unknown:
            raise ValueError(
                f"{MODEL_NAME}: unknown model_args {unknown} (see `nemotron-elastic-lm-eval --help`)"
            )
        if path is None:
            raise ValueError(f"{MODEL_NAME}: model_args needs path=DIR (an elastic checkpoint or any model)")

        config = peek_config(path)  # native / elastic folders: check the budget before reading weights
        target = None if config is None else _target(path, config, budget, spec, interpolate)
        model = load_model(path, dtype=dtype, device=_usable_device(device))
        target = target or _target(path, model.config, budget, spec, interpolate)
        tokenizer = load_tokenizer(path)
        if tokenizer is None:
            raise ValueError(f"{path}: the checkpoint has no tokenizer; lm-eval needs one")
        self._setup(model, tokenizer, target, str(path), batch_size, max_length, max_gen_toks)

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> NemotronElasticLM:
        """lm-eval's constructor from `--model_args`; a model arg wins over the CLI's option of that name."""
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> NemotronElasticLM:
        """As lm-eval's, except that `arg_dict` wins: lm-eval's CLI always passes its own `batch_size`
        (default 1) and `device`, which would fail as a repeated argument when the model args name them."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        tokenizer: Any,
        target: EvalTarget,
        name: str = "model",
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        max_gen_toks: int = 256,
    ) -> NemotronElasticLM:
        """Wrap an already loaded HybridLM (the `eval --tasks` path: one load for every budget)."""
        self = cls.__new__(cls)
        TemplateLM.__init__(self)
        self._setup(model, tokenizer, target, name, batch_size, max_length, max_gen_toks)
        return self

    def _setup(
        self,
        model: Any,
        tokenizer: Any,
        target: EvalTarget,
        name: str,
        batch_size: Any,
        max_length: Any,
        max_gen: Any,
    ) -> None:
        self.model, self.tokenizer, self.target, self.name = model.eval(), tokenizer, target, name
        self.progress = True  # False silences this class's progress bars (lm-eval's own stay)
        # The sliced masks are built once: every forward of this budget reuses them.
        self.masks = None if target.spec.is_full() else ElasticMasks.from_spec(target.spec)
        auto = isinstance(batch_size, str) and batch_size.startswith("auto")  # "auto" / "auto:N": no probing
        self.batch_size = DEFAULT_BATCH_SIZE if auto else int(batch_size)
        self.max_length = int(max_length or model.config.max_position_embeddings)
        self.max_gen_toks = int(max_gen)
        self.generated_tokens = 0  # set by generate_until
        if self.batch_size < 1 or self.max_length < 2 or self.max_gen_toks < 1:
            raise ValueError(f"{MODEL_NAME}: batch_size, max_length and max_gen_toks must be positive")
        self._device = next(model.parameters()).device
        ids = [tokenizer.eos_token_id, tokenizer.bos_token_id, model.config.eos_token_id]
        if all(i is None for i in ids):
            raise ValueError(f"{name}: the tokenizer has no EOS or BOS token to start a text from")
        self._eot = int(next(i for i in ids if i is not None))
        self._prefix = int(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else self._eot

    # --- tokens --------------------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def prefix_token_id(self) -> int:
        return self._prefix

    @property
    def tokenizer_name(self) -> str:
        return f"{self.name}:{self.target.label}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        # Special tokens only when asked: the held-out stream and training pack text without them.
        return list(
            self.tokenizer(string, add_special_tokens=bool(add_special_tokens), verbose=False)["input_ids"]
        )

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def get_model_info(self) -> dict[str, Any]:
        """Stored by lm-eval in its results' `config`."""
        return {"nemotron_elastic": self.target.describe() | {"params": self.target.spec.param_count()}}

    # --- scoring -------------------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    def _window(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """(inputs, targets): context + continuation left-truncated to max_length + 1 tokens (lm-eval's
        causal window); the targets are the continuation tokens that remain, predicted by the last inputs."""
        whole = (context + continuation)[-(self.max_length + 1) :]
        n = min(len(continuation), len(whole) - 1)
        return whole[:-1], whole[len(whole) - n :]

    @torch.no_grad()
    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """(key, context ids, continuation ids) -> (log p(continuation | context), continuation is greedy).

        Batched by length (module docstring): longest first, so a batch holds similar lengths (little
        padding) and the first batch shows the peak memory; at most `batch_size` rows and BATCH_TOKENS
        padded tokens per forward (one row at least); batch_size=1 is one request per forward.
        """
        rows = [self._window(context, continuation) for _, context, continuation in requests]
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][0]), i))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        bar = tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm or not self.progress)
        for group in length_batches([len(rows[i][0]) for i in order], order, self.batch_size, self._device):
            for i, result in zip(group, score_rows(self.model, self.masks, [rows[i] for i in group])):
                results[i] = result
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], result)
            bar.update(len(group))
        bar.close()
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Total log-likelihood of each text, in windows of `max_length` tokens (every token scored once)."""
        pieces, owner = [], []
        for index, request in enumerate(requests):
            windows = get_rolling_token_windows(
                self.tok_encode(request.args[0]), self.prefix_token_id, self.max_length, context_len=1
            )
            for context, continuation in map(make_disjoint_window, windows):
                pieces.append((None, context, continuation))
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, self._loglikelihood_tokens(pieces, disable_tqdm)):
            totals[index] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with do_sample and a temperature) continuations, cut at the first stop string.

        Up to `batch_size` requests decode together in the continuous batcher (model/batcher.py); a request
        leaves the batch as soon as its text holds one of its `until` strings (or at EOS / max_gen_toks),
        and the next one takes its place. Each text equals the request decoded alone."""
        batcher = ContinuousBatcher(self.model, prefill_chunk=self.max_length)
        waiting = list(enumerate(requests))[::-1]  # popped from the end: in order
        running: dict[int, tuple[int, list[str], list[int]]] = {}  # rid -> (index, until, tokens)
        outputs: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm or not self.progress)
        self.generated_tokens = 0  # tokens decoded by this call (early stops make it < max_gen_toks each)
        while waiting or running:
            while waiting and len(running) < self.batch_size:
                index, request = waiting.pop()
                rid, until = self._submit_generation(batcher, request)
                running[rid] = (index, until, [])
            for event in batcher.step():
                index, until, tokens = running[event.rid]
                if event.token is not None:
                    tokens.append(event.token)
                    self.generated_tokens += 1
                    if any(stop and stop in self.tok_decode(tokens) for stop in until):
                        batcher.cancel(event.rid)  # its text is complete: free the row at the next step
                if event.finish is None:
                    continue
                text = self.tok_decode(tokens)
                for stop in until:
                    if stop and stop in text:
                        text = text[: text.index(stop)]
                outputs[index] = text
                self.cache_hook.add_partial("generate_until", requests[index].args, text)
                del running[event.rid]
                bar.update(1)
        bar.close()
        return outputs

    def _submit_generation(self, batcher: ContinuousBatcher, request: Any) -> tuple[int, list[str]]:
        """Queue one generate_until request -> (its id, its stop strings)."""
        context, gen_kwargs = request.args
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or [self.tok_decode([self.eot_token_id])]
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
        sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0)) if sample else 0.0
        ids = self.tok_encode(context)[-max(1, self.max_length - max_new) :] or [self.prefix_token_id]
        rid = batcher.submit(SequenceRequest(
            ids, max_new, self.masks, temperature,
            top_k=kwargs.pop("top_k", None) if sample else None,
            top_p=kwargs.pop("top_p", None) if sample else None,
            stop_token_ids=frozenset({self.eot_token_id}),
        ))
        return rid, until
