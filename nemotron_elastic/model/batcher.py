# SPDX-License-Identifier: Apache-2.0
"""ContinuousBatcher: many sequences decoded together, joining and leaving at every step.

The one decoding loop of the project: `generate`, the serving engine and lm-eval's `generate_until` all run
their requests through it (docs/SERVING.md, batched decoding). Each `step()`:

1. drops cancelled requests (their cache rows are freed at once) and admits new ones into their
   sub-model's cache while the step's prompt tokens stay within `prefill_chunk`;
2. runs one forward per sub-model with rows: a prefilling row feeds its next prompt tokens (at most
   `prefill_chunk` per sub-model and step, in arrival order: a long prompt takes several steps, short ones
   share a step), a decoding row its last token; rows whose prompt is done and decoding rows sample their
   next token. Such a ragged step runs its projections and MLPs on the real tokens only and its Mamba scans
   per kind of row (model/kv_store.py `RowStep.packed`), so a new request does not cost the running rows a
   second pass over the weights (benchmarks/serve_load.py).

Rows of different sub-models (budgets) share a step in one of two ways (`mixed`):

- `group` (default): one forward per active sub-model per step, each sliced to its sub-model with caches
  of its own size, so a row costs what its sub-model costs;
- `widest`: one forward for all rows, sliced to the union of their sub-models (the widest active budget)
  and each row masked to its own (`ElasticMasks.per_row`: nesting makes every sub-model a prefix of the
  union); the caches follow the union's layout (`batch_cache.relayout` when it changes). One forward per step
  whatever the mix; a batch of one budget runs exactly as under `group`.

benchmarks/serve_load.py measures both. A row leaves when it
samples a stop token, reaches `max_new_tokens`, or is cancelled. Each row's tokens equal that request
decoded alone: rows never mix (per-row positions, masks and states), and sampling uses the request's own
generator.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch

from ..config.spec import SubnetSpec
from .batch_cache import KV_KINDS, BatchCache, PagePool, relayout
from .decode import SequenceRequest, TokenEvent, sample_next
from .masks import ElasticMasks

MIXED = ("group", "widest")


@dataclass(eq=False)
class _Row:
    rid: int
    request: SequenceRequest
    generator: torch.Generator | None
    fed: int = 0  # prompt tokens fed so far
    produced: int = 0
    last: int | None = None  # the last sampled token (fed at the next decode step)


@dataclass(eq=False)
class _Group:
    """The rows of one sub-model in one cache, in arrival order: rows still prefilling (`row.fed` short of
    the prompt) and rows decoding."""

    subnet: SubnetSpec | ElasticMasks | None
    cache: BatchCache
    waiting: list[_Row] = field(default_factory=list)  # submitted, no prompt token fed yet
    rows: list[_Row] = field(default_factory=list)
    layout: SubnetSpec | None = None  # widest: the sub-model the cache is laid out for (the rows' union)
    layout_masks: ElasticMasks | None = None  # its masks, built once per layout (None: the parent)

    def prefilling(self) -> list[_Row]:
        return [row for row in self.rows if row.fed < len(row.request.prompt)]


class ContinuousBatcher:
    """Args:
        model: a HybridLM (eval mode).
        kv_cache: "padded" or "paged" (model/batch_cache.py; benchmarks/serve_load.py measures both).
        prefill_chunk: prompt tokens fed per sub-model and step, over all new requests (bounds how long a
            step of the running rows waits behind new prompts).
        mixed: how rows of different sub-models share a step: "group" or "widest" (see the module doc;
            "widest" takes SubnetSpec sub-models only).
    Not thread-safe: one thread calls submit / cancel / step (the serving engine wraps it in one).
    """

    def __init__(
        self, model: torch.nn.Module, kv_cache: str = "padded", prefill_chunk: int = 256, mixed: str = "group"
    ) -> None:
        self.check_options(kv_cache, prefill_chunk, mixed)
        self.mixed = mixed
        self.model, self.kv_cache, self.prefill_chunk = model, kv_cache, prefill_chunk
        self._full = SubnetSpec.full(model.config)
        self.device = model.embeddings.weight.device
        self._groups: dict[object, _Group] = {}
        self._next_id = 0
        self._cancelled: set[int] = set()
        self._finished_early: list[TokenEvent] = []
        self.prefill_tokens = 0  # prompt tokens of the last step's forward (tests, logs)

    @staticmethod
    def check_options(kv_cache: str, prefill_chunk: int, mixed: str) -> None:
        """Refuse a bad option in one line (before any model is built)."""
        if kv_cache not in KV_KINDS:
            raise ValueError(f"kv cache kind: expected one of {', '.join(KV_KINDS)}, got {kv_cache!r}")
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk: must be >= 1, got {prefill_chunk}")
        if mixed not in MIXED:
            raise ValueError(f"mixed: expected one of {', '.join(MIXED)}, got {mixed!r}")

    # --- requests ----------------------------------------------------------------------------------------
    def submit(self, request: SequenceRequest) -> int:
        """Queue a request; returns its id (events carry it)."""
        if not request.prompt:
            raise ValueError("prompt: empty")
        if request.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: must be >= 0, got {request.max_new_tokens}")
        if self.mixed == "widest" and not (request.subnet is None or isinstance(request.subnet, SubnetSpec)):
            raise ValueError("subnet: mixed='widest' batches take SubnetSpec sub-models (or None), not masks")
        rid, self._next_id = self._next_id, self._next_id + 1
        if request.max_new_tokens == 0:
            self._finished_early.append(TokenEvent(rid, None, "length"))
            return rid
        generator = request.generator
        if generator is None and request.temperature > 0:
            seed = request.seed if request.seed is not None else secrets.randbits(63)
            generator = torch.Generator(device=self.device).manual_seed(seed)
        self._group(request.subnet).waiting.append(_Row(rid, request, generator))
        return rid

    def cancel(self, rid: int) -> None:
        """End request `rid` at the next step (finish "cancelled"); unknown or finished ids are ignored."""
        self._cancelled.add(rid)


    @property
    def active(self) -> int:
        """Requests not finished yet (prefilling or decoding)."""
        return sum(len(g.waiting) + len(g.rows) for g in self._groups.values())

    def has_work(self) -> bool:
        return bool(self._finished_early) or self.active > 0

    def cache_bytes(self) -> int:
        """Bytes held by every live cache (KV with its padding or whole blocks, Mamba states)."""
        return sum(g.cache.nbytes() for g in self._groups.values())

    def _group(self, subnet: SubnetSpec | ElasticMasks | None) -> _Group:
        if self.mixed == "widest":  # one group at the parent's width: every row masked to its own sub-model
            subnet = None
        key = subnet if subnet is None or isinstance(subnet, SubnetSpec) else id(subnet)
        group = self._groups.get(key)
        if group is None:
            masks = ElasticMasks.from_spec(subnet) if isinstance(subnet, SubnetSpec) else subnet
            pool = PagePool() if self.kv_cache == "paged" else None
            group = _Group(masks, self._empty(0, pool))
            self._groups[key] = group
        return group

    def _empty(self, rows: int, pool: PagePool | None) -> BatchCache:
        return BatchCache.empty_rows(len(self.model.layers), rows, self.kv_cache, pool, self.device)

    # --- the step ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Run one step of every sub-model with work; the events it produced, in row order."""
        events, self._finished_early = self._finished_early, []
        for group in self._groups.values():
            events += self._drop_cancelled(group)
            if self.mixed == "widest":
                self._fit_layout(group)
            events += self._advance(group)
        self._cancelled.clear()
        # a sub-model with no rows left gives back its cache (and paged pool) until it is asked for again
        self._groups = {k: g for k, g in self._groups.items() if g.waiting or g.rows}
        return events

    def _drop_cancelled(self, group: _Group) -> list[TokenEvent]:
        """Drop cancelled requests (their rows leave at once), then admit waiting ones."""
        events = [TokenEvent(r.rid, None, "cancelled") for r in group.waiting if r.rid in self._cancelled]
        group.waiting = [r for r in group.waiting if r.rid not in self._cancelled]
        gone = [b for b, row in enumerate(group.rows) if row.rid in self._cancelled]
        if gone:
            cache = group.cache
            events += [TokenEvent(group.rows[b].rid, None, "cancelled", int(cache.lengths[b]), cache.row_bytes(b))
                       for b in gone]
            group.cache = cache.drop(gone)
            group.rows = [row for b, row in enumerate(group.rows) if b not in gone]
        self._admit(group)
        return events

    def _admit(self, group: _Group) -> None:
        """Waiting requests join the cache while this step's prompt tokens stay within prefill_chunk (the
        rows already prefilling come first; only the last row of a step can be cut short, so every
        prefilling row gets tokens each step)."""
        prefilling = group.prefilling()
        budget = self.prefill_chunk - sum(len(r.request.prompt) - r.fed for r in prefilling)
        admitted = 0
        while group.waiting and (budget > 0 or not prefilling):
            row = group.waiting.pop(0)
            group.rows.append(row)
            prefilling.append(row)
            budget -= len(row.request.prompt)
            admitted += 1
        if admitted:
            group.cache = BatchCache.concat([group.cache, self._empty(admitted, group.cache.pool)])

    def _spec(self, row: _Row) -> SubnetSpec:
        return row.request.subnet or self._full

    def _fit_layout(self, group: _Group) -> None:
        """Lay the group's cache out for the union of its rows' sub-models (widest)."""
        rows = group.waiting + group.rows
        if not rows:
            return
        union = SubnetSpec.union([self._spec(r) for r in rows])
        if group.layout is not None and group.layout != union:
            relayout(group.cache, self.model, group.layout, union)
        if group.layout != union:
            group.layout_masks = None if union == self._full else ElasticMasks.from_spec(union)
        group.layout = union

    def _advance(self, group: _Group) -> list[TokenEvent]:
        """One forward for every row of the group: a prefilling row feeds its next prompt tokens (within
        this step's prefill_chunk, in arrival order), a decoding row its last token. Rows whose prompt is
        done and decoding rows sample their next token. A ragged step (a prompt chunk next to one-token
        rows) runs its projections on the real tokens only (model/kv_store.py `RowStep.packed`), so a new
        request costs the running rows no extra weight pass."""
        if not group.rows:
            return []
        pieces, budget = [], self.prefill_chunk
        for row in group.rows:
            if row.fed < len(row.request.prompt):
                pieces.append(row.request.prompt[row.fed : row.fed + budget])
                budget -= len(pieces[-1])
            else:
                pieces.append([row.last])
        self.prefill_tokens = self.prefill_chunk - budget
        logits = self._forward(group, group.cache, pieces, group.rows)  # (B, V) at last fed tokens
        ready = []  # rows that sample now: decoding ones, and those whose prompt this step completed
        for b, (row, piece) in enumerate(zip(group.rows, pieces)):
            if row.fed < len(row.request.prompt):
                row.fed += len(piece)
                if row.fed < len(row.request.prompt):
                    continue
            ready.append(b)
        if not ready:
            return []
        events = self._sample([group.rows[b] for b in ready], logits[ready])
        group.cache, group.rows = self._retire(group.cache, group.rows, events)
        return events

    def _forward(self, group: _Group, cache: BatchCache, pieces: list[list[int]], rows: list[_Row]) -> torch.Tensor:
        """Feed each row its piece (ragged, right-padded) -> logits (B, V) at each row's last real token."""
        subnet = group.subnet
        if self.mixed == "widest":  # sliced to the union; rows of a smaller sub-model masked inside it
            specs, union = [self._spec(row) for row in rows], group.layout
            weight = self.model.embeddings.weight
            if any(s != union for s in specs):
                subnet = ElasticMasks.per_row(specs, union, weight.dtype, weight.device)
            else:
                subnet = group.layout_masks
        width = max(len(p) for p in pieces)
        x = torch.tensor([[*piece, *[0] * (width - len(piece))] for piece in pieces], dtype=torch.long)
        counts = torch.tensor([len(p) for p in pieces], device=self.device)
        out = self.model(x.to(self.device), cache=cache, counts=counts, last_only=True, subnet=subnet)
        return out[:, 0]

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> list[TokenEvent]:
        """Each row's next token from its logits (R, V), with its own sampling parameters and generator."""
        greedy = logits.argmax(dim=-1).tolist()
        events = []
        for b, row in enumerate(rows):
            req = row.request
            token = greedy[b]
            if req.temperature > 0:
                token = int(sample_next(logits[b : b + 1], req.temperature, req.top_k, req.top_p, row.generator)[0])
            row.last, row.produced = token, row.produced + 1
            finish = "stop" if token in req.stop_token_ids else "length" if row.produced >= req.max_new_tokens else None
            events.append(TokenEvent(row.rid, token, finish))
        return events

    @staticmethod
    def _retire(cache: BatchCache, rows: list[_Row], events: list[TokenEvent]) -> tuple[BatchCache, list[_Row]]:
        """Drop the rows whose last event finished them (the event gets the row's final cache size)."""
        ended = {e.rid: e for e in events if e.finish is not None}
        gone = [b for b, row in enumerate(rows) if row.rid in ended]
        if not gone:
            return cache, rows
        for b in gone:
            event = ended[rows[b].rid]
            event.seen, event.cache_bytes = int(cache.lengths[b]), cache.row_bytes(b)
        return cache.drop(gone), [row for b, row in enumerate(rows) if b not in gone]

    def run(self) -> dict[int, list[TokenEvent]]:
        """Step until every submitted request has finished; each request's events in order."""
        out: dict[int, list[TokenEvent]] = {}
        while self.has_work():
            for event in self.step():
                out.setdefault(event.rid, []).append(event)
        return out


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
    subnet: SubnetSpec | ElasticMasks | None = None,
) -> torch.Tensor:
    """Continue `input_ids` (B, T) by up to `max_new_tokens` tokens -> (B, T + n), through the batcher.

    Rows that emitted an `eos_token_id` (one id or several) are filled with the first one; the result is as
    long as the longest row. `subnet` runs a sub-model of the parent (a SubnetSpec or ElasticMasks); a
    `generator` is shared by the rows (each row samples from it in turn).
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if max_new_tokens == 0 or input_ids.shape[0] == 0:
        return input_ids
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    batcher = ContinuousBatcher(model, prefill_chunk=max(1, input_ids.numel()))  # every prompt in one step
    rids = [
        batcher.submit(SequenceRequest(row, max_new_tokens, subnet, temperature, top_k, top_p,
                                       stop_token_ids=frozenset(eos), generator=generator))
        for row in input_ids.tolist()
    ]
    events = batcher.run()
    rows = [[e.token for e in events[rid] if e.token is not None] for rid in rids]
    width = max(len(r) for r in rows)
    fill = eos[0] if eos else 0
    new = torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=input_ids.dtype, device=input_ids.device)
    return torch.cat([input_ids, new], dim=1)
