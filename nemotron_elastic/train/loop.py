# SPDX-License-Identifier: Apache-2.0
"""The shared training loop: stages, data, schedules, gradient accumulation, logging, evaluation and
exact-resume checkpoints. `ElasticTrainer` (router + multi-budget KD) and `PretrainTrainer` (plain LM loss)
supply the loss, the evaluation and the final output.

    for step in all stages' steps:
        set LR (warmup + cosine, one multiplier for every param group)
        for micro in accum:   draw = micro // (accum / draws)
                              loss = self.micro_loss(batch, step, draw); (loss / accum).backward()
        clip, optimizer step, log (tqdm with tokens/s; metrics.jsonl), evaluate, checkpoint

Under torchrun (`distributed.py`) every rank runs this same loop on its slice of each global batch
(micro_batch x world_size windows per micro-step); gradients are averaged after the accumulation (ddp) or
at every micro-step by FSDP, metrics are averaged over ranks, and rank 0 alone writes metrics and the
final output; every rank writes its rows of each checkpoint (`state.py`).

World-size invariance (a stage with `global_batch`): step s reads sequences [s G, (s + 1) G) of the
stage's stream in the same global order on any number of processes; its `budget_draws` draws each cover
G / draws consecutive sequences, which is one or several whole micro-steps, and the Gumbel generator is
rewound to the draw's start for each of them, so every sequence gets the same budget and the same Gumbel
sample whatever the world size. Budget draws per stage are kept in the checkpoint.
"""

from __future__ import annotations

import abc
import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.stream import write_gathered
from ..config.data import require_paths
from ..config.schedule import (
    MAX_EPOCHS,
    accumulations,
    lr_multiplier,
    resumed_accumulation,
    stage_at,
    stage_tokens,
)
from ..data.blend import Batch, BlendDataset
from ..data.run_data import RunData, check_blend_sizes, resolve_data
from ..io import WEIGHTS_NAME, replace_dir
from .distributed import Distributed, all_reduce_window, setup
from .run_dir import MetricsWriter, prepare_run_dir
from .runtime import Throughput, peak_tflops
from .state import CheckpointWriter, load_checkpoint


class _NoMetrics:
    """The metrics writer of ranks other than 0: they compute the same numbers but write nothing."""

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        pass

    def resume_at(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer(abc.ABC):
    """Subclasses set, in __init__: cfg (with stages, optim, seed, bf16, log/eval/save_every, dist), out,
    dist and device (`distributed.setup`), model (trained; `dist.wrap_trained` before the optimizer is
    built), aux (a second trained module, e.g. the router, or an empty Module), frozen (FSDP-sharded
    frozen models, e.g. the teacher), optimizer, run_data (`open_data`), resume_from; and implement
    micro_loss, evaluate, finish."""

    cfg: Any
    out: Path
    dist: Distributed
    device: torch.device
    model: torch.nn.Module
    aux: torch.nn.Module
    optimizer: torch.optim.Optimizer
    run_data: RunData
    resume_from: Path | None
    frozen: tuple[torch.nn.Module, ...] = ()
    progress: bool = True
    name: str = "train"

    def start_run(self, cfg: Any, progress: bool) -> None:
        """What every run does first: its config, output folder, processes and device, seeds."""
        self.cfg, self.progress, self.out = cfg, progress, Path(cfg.out)
        require_paths(cfg.data, cfg.stages)  # a recipe's unset data path fails before any process group or model
        self.dist = setup(cfg.dist, cfg.bf16)
        self.device = self.dist.device
        # (micro-steps per rank, budget draws) per stage: a global batch that does not split over these
        # ranks fails here, before anything is allocated
        self.accum = accumulations(cfg, self.dist.world_size)
        torch.manual_seed(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)

    @contextlib.contextmanager
    def removed_on_failure(self) -> Iterator[None]:
        """The rest of a trainer's set-up: if it fails (a missing data path, a bad spec, ...), what this start
        wrote into a fresh run folder is removed again. A folder with an earlier run in it is left alone."""
        existed = self.out.exists()
        fresh = not existed or (self.out.is_dir() and not any(self.out.iterdir()))
        try:
            yield
        except BaseException:
            if fresh and self.dist.is_main and self.out.is_dir():
                if existed:  # the user's empty folder stays, empty
                    for child in self.out.iterdir():
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                else:
                    shutil.rmtree(self.out, ignore_errors=True)
            raise

    def prepare_run(self, resume: bool, overwrite: bool) -> Path | None:
        """`prepare_run_dir` on rank 0 (it writes the run folder); every rank gets the resume checkpoint."""

        def run() -> str | None:
            path = prepare_run_dir(self.out, self.cfg, resume, overwrite)
            return None if path is None else str(path)

        path = self.dist.on_main(run)
        return None if path is None else Path(path)

    def setup_common(self) -> None:
        self.check_data_size()
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # Same seed on every rank: the Gumbel draws (hence the sub-models) agree across ranks. On the
        # training device: torch.rand refuses a CPU generator for CUDA tensors.
        self.generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 1)
        self.metrics = MetricsWriter(self.out) if self.dist.is_main else _NoMetrics()
        self.checkpoints = CheckpointWriter(self.out, self.dist, background=self.cfg.save_async)
        self.step = 0
        self.data_states: dict[str, Any] = {}

    def open_data(self, tokenizer: Any, tokenizer_dir: Path, who: str) -> None:
        """`self.run_data`: every stage's blend and the held-out streams (`data/run_data.py`); raw paths are
        prepared into `data.workdir` by rank 0 first, while the other ranks wait outside any collective."""
        token = self.dist.on_main(lambda: secrets.token_hex(8))  # this launch, for the preparation's status file
        workdir = Path(self.cfg.data.workdir or self.out / "data")
        self.run_data = resolve_data(self.cfg.data, self.cfg.stages, tokenizer, Path(tokenizer_dir), workdir,
                                     is_main=self.dist.is_main, token=token,
                                     progress=self.progress and self.dist.is_main, who=who)

    def check_data_size(self) -> None:
        """Refuse a run that reads a source's training tokens more than MAX_EPOCHS times (`data.allow_repeat`)."""
        def tokens(i: int) -> int:
            stage = self.cfg.stages[i]
            return stage_tokens(stage, self.accum[stage.name][0], self.dist.world_size)

        check_blend_sizes(self.run_data, tokens, MAX_EPOCHS, self.cfg.data.allow_repeat)

    # --- hooks -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def micro_loss(self, batch: torch.Tensor, step: int, draw: int, stage,
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, str, dict]:
        """(loss, metrics group name, metrics) for one micro-batch (B, T+1) of budget draw `draw` of optimizer
        step `step` (draws are per step, not per micro-step: `loop` docstring); mask (B, T) bool: the targets
        the loss counts (`data.loss_on: assistant`; None: all). Metric values are floats or detached 0-dim
        tensors, left on the device (`to_host` reads them at the log interval)."""

    @abc.abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics, logged under split "eval"."""

    @abc.abstractmethod
    def finish(self) -> dict[str, Any]:
        """Write the run's final output; its return value is `fit()`'s."""

    # --- shared --------------------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def publish(self, out: Path, write_files: Callable[[Path], None]) -> None:
        """Write the trained model as the folder `out` (replaced atomically): its weights, then
        `write_files(folder)` on rank 0 for the rest (config, tokenizer, router, ...). Every rank calls it.

        The weights stream into `model.safetensors` one tensor at a time; under FSDP each is gathered just
        before it is written (`checkpoint/stream.py`), so no rank ever holds the whole model."""

        def start() -> str:
            tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
            tmp.mkdir(parents=True)
            return str(tmp)

        tmp = Path(self.dist.on_main(start))
        tied = self.model.config.tie_word_embeddings
        error: Exception | None = None
        try:
            write_gathered(self.model, tmp / WEIGHTS_NAME if self.dist.is_main else None,
                           skip=lambda name: tied and name == "lm_head.weight")
        except Exception as e:  # noqa: BLE001 -- raised on every rank by the commit below
            error = e

        def commit() -> None:
            try:
                if error is not None:
                    raise error
                write_files(tmp)
                replace_dir(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

        self.dist.on_main(commit)

    def _evaluate(self, **kwargs: Any) -> dict[str, Any]:
        """`evaluate()` on every rank (FSDP forwards are collectives); then free the roots it unsharded."""
        result = self.evaluate(**kwargs)
        self.dist.reshard(self.model, *self.frozen)
        return result

    def _dataset(self, stage_index: int) -> BlendDataset:
        stage = self.cfg.stages[stage_index]
        # Rank r reads the r-th micro_batch of each global batch of micro_batch * world_size windows.
        streams, weights = self.run_data.stages[stage_index]
        order = self.cfg.seed if self.cfg.data.order_seed is None else self.cfg.data.order_seed
        ds = BlendDataset(streams, weights, stage.seq_len, stage.micro_batch, seed=order + stage_index,
                          rank=self.dist.rank, world_size=self.dist.world_size, masked=self.run_data.masked)
        state = self.data_states.get(stage.name)
        if state is not None:
            ds.load_state_dict(state)
        return ds

    def total_steps(self) -> int:
        return sum(s.steps for s in self.cfg.stages)

    def fit(self, stop_at: int | None = None) -> dict[str, Any] | None:
        """Train to the end (then `finish()` and return its result), or stop after step `stop_at` with a
        checkpoint there (continue it with a new trainer built with `resume=True`)."""
        cfg, total = self.cfg, self.total_steps()
        window: dict[str, list[float]] = {}  # metrics since the last log line (part of the resume state)
        if self.resume_from is not None:
            state = load_checkpoint(self.resume_from, self.model, self.aux, self.optimizer, self.generator)
            self.step, self.data_states, window = state["step"], state["data"], state.get("window", {})
            self.accum = resumed_accumulation(cfg, state.get("world_size", self.dist.world_size),
                                              state.get("budget_draws"), self.dist.world_size)
            self.metrics.resume_at(self.step)  # the interrupted run may have logged steps after its checkpoint
        from tqdm.auto import tqdm

        quiet = not (self.progress and self.dist.is_main)
        bar = tqdm(total=total, initial=self.step, desc=self.name, disable=quiet, unit="step")
        datasets: dict[str, BlendDataset] = {}
        throughput = Throughput(self.device, peak_tflops(self.device, cfg.peak_tflops))
        params = [p for p in list(self.model.parameters()) + list(self.aux.parameters()) if p.requires_grad]
        if self.step == 0:  # the starting point every later evaluation is read against
            self.metrics.write(0, "eval", self._evaluate())
        while self.step < total:
            throughput.resume()
            index, stage = stage_at(cfg, self.step)
            if stage.name not in datasets:
                datasets[stage.name] = self._dataset(index)
            mult = lr_multiplier(self.step, total, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * mult
            accum, draws = self.accum[stage.name]
            per_draw = accum // draws
            for micro in range(accum):
                draw, within = divmod(micro, per_draw)
                if within == 0:  # a draw's first micro-step: its Gumbel samples start here
                    draw_rng, draw_metrics = self.generator.get_state(), {}
                else:  # the draw's other micro-steps see the same samples (world-size invariance)
                    self.generator.set_state(draw_rng)
                batch: Batch = next(datasets[stage.name]).to(self.device)
                self.dist.all_reduce_on(self.model, last=micro == accum - 1)
                loss, key, metrics = self.micro_loss(batch.tokens, self.step, draw, stage, mask=batch.loss_mask)
                (loss / accum).backward()
                throughput.add(batch.tokens[:, :-1].numel() * self.dist.world_size, metrics.pop("model_flops", 0.0))
                self.dist.reshard(*self.frozen)  # the KD loss needed the teacher's head until now
                # The window holds one mean per draw (over its micro-steps here, over the ranks when logged):
                # a draw is the same sequences on any number of processes, so a window saved on one world
                # size and continued on another weighs every draw alike.
                for k, v in metrics.items():
                    name = f"{key}/{k}" if key else k
                    draw_metrics[name] = v if within == 0 else draw_metrics[name] + v
                if within == per_draw - 1:
                    for name, v in draw_metrics.items():
                        window.setdefault(name, []).append(v if per_draw == 1 else v / per_draw)
            self.dist.sync_grads(params)
            grad_norm = self.dist.clip_grad_norm(params, cfg.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.checkpoints.finish()  # publish the checkpoint written in the background during this step
            self.step += 1
            throughput.pause()
            bar.update(1)
            bar.set_postfix(stage=stage.name, tok_s=f"{throughput.tokens_per_s():.0f}")
            if self.step % cfg.log_every == 0 or self.step == total:
                window = all_reduce_window(to_host(window))  # each rank saw its own rows: the mean over ranks
                row = {k: sum(v) / len(v) for k, v in window.items()}
                speed = throughput.row()  # tokens/s, model TFLOP/s, MFU (a known peak), peak memory
                row.update(self.log_extra(self.step), lr=self.optimizer.param_groups[0]["lr"],
                           grad_norm=float(grad_norm), stage=stage.name, **speed)
                if "mfu" in speed:
                    bar.set_postfix(stage=stage.name, tok_s=f"{speed['tokens_per_s']:.0f}", mfu=f"{speed['mfu']:.1%}")
                self.metrics.write(self.step, "train", row)
                window = {}
            if self.step % cfg.eval_every == 0 or self.step == total:
                self.metrics.write(self.step, "eval", self._evaluate())
            stopping = stop_at is not None and self.step >= stop_at
            if (self.step % cfg.save_every == 0 or stopping) and self.step < total:
                # Rank 0 writes the window: averaged first, so a resumed run logs the same means.
                window = all_reduce_window(to_host(window))
                self._checkpoint(datasets, window)
            if stopping and self.step < total:
                self.checkpoints.finish()
                bar.close()
                self.metrics.close()
                return None
        bar.close()
        self.checkpoints.finish()
        result = self.finish()
        self.metrics.close()
        return result

    def _checkpoint(self, datasets: dict[str, BlendDataset], window: dict[str, list[float]]) -> None:
        """Save the resume state of the current step (every rank calls it and writes its own rows)."""
        states = dict(self.data_states)
        states.update({name: ds.state_dict() for name, ds in datasets.items()})
        extra = {"data": states, "window": window,
                 "budget_draws": {name: draws for name, (_, draws) in self.accum.items()}}
        self.checkpoints.save(self.step, self.model, self.aux, self.optimizer, self.generator, extra)

    def log_extra(self, step: int) -> dict[str, float]:
        """Extra scalars for the training log (e.g. the router's temperature)."""
        return {}


def to_host(window: dict[str, list]) -> dict[str, list[float]]:
    """Metric lists (floats and 0-dim device tensors) as Python floats: one device-to-host copy per metric,
    made only when the window is logged or saved, never per micro-step."""
    out = {}
    for key, values in window.items():
        tensors = [v for v in values if torch.is_tensor(v)]
        if not tensors:
            out[key] = [float(v) for v in values]
            continue
        device = tensors[0].device
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
        out[key] = stacked.tolist()
    return out
