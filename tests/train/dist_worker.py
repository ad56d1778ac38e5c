# SPDX-License-Identifier: Apache-2.0
"""One rank of multi-process training runs, started by test_distributed.py with torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

    python dist_worker.py JOBS.json

JOBS.json is a list of {"kind": "elastic" | "pretrain" | "allocations", "config": {...}, "stop_at": k | null}, run in
order in the same processes (torch and transformers are imported once: most of a tiny run's time). With
`stop_at`, the run stops after step k with a checkpoint and a new trainer resumes it to the end; with
"then": "stop" it only stops (another world size resumes it), with "resume": true it only resumes a run
that another world size stopped. "die_in_save": R makes rank R exit while it writes the checkpoint of
step `die_in_save_step`: the other ranks must fail on the collective timeout instead of hanging. Rank 0
marks each finished job with `<out>/done` (holding the type of the trained parameters), so the tests can
tell which job failed. A job with "report": FOLDER is expected to fail: each rank writes its error there.
A "disagree" job checks that `check_same` fails on every rank given different values. An "allocations" job builds an elastic trainer (no training) and writes, per rank, every tensor shape
allocated meanwhile to "out": FOLDER.
"""

import json
import os
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode

from nemotron_elastic.config.run import PretrainConfig, TrainConfig
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.train.distributed import barrier, check_same, is_main, teardown
from nemotron_elastic.train.elastic import ElasticTrainer
from nemotron_elastic.train.pretrain import PretrainTrainer

ALLOCATING = {"empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full",
              "full_like", "clone", "_to_copy", "new_empty", "new_empty_strided", "new_zeros", "new_full"}


class Allocations(TorchDispatchMode):
    """The shape of every tensor an allocating operator returns on a real device (a DTensor: its local
    part), with the operator's name."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.__name__.split(".")[0] not in ALLOCATING:
            return out
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                shape = (t.to_local() if isinstance(t, DTensor) else t).shape
                self.shapes.append([list(shape), str(func)])
        return out


def rss_anon() -> int:
    """This process' anonymous resident memory in bytes (Linux: RssAnon in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def load_peak_rss(job: dict) -> None:
    """Load the parent under fsdp as the elastic trainer does (or, with job["whole"], build it whole and then
    shard it), polling RssAnon every 2 ms; write base / peak / after and the bytes of this rank's parameters."""
    import threading

    from nemotron_elastic.config.schedule import DistConfig
    from nemotron_elastic.train.distributed import setup

    dist = setup(DistConfig(strategy="fsdp"))
    base = rss_anon()
    samples, stop = [base], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            samples.append(rss_anon())
            stop.wait(0.002)

    thread = threading.Thread(target=poll)
    thread.start()
    if job["whole"]:  # the control: built whole on the CPU, then sharded (the pretrain path)
        from nemotron_elastic.checkpoint.native import peek_config
        from nemotron_elastic.model import HybridLM

        model = dist.wrap_trained(HybridLM(peek_config(job["parent"])))
    else:
        model = dist.load_model(Path(job["parent"]), torch.float32)
    stop.set()
    thread.join()
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() * 4 for p in model.parameters())
    result = {"base": base, "peak": max(samples), "after": rss_anon(), "local_bytes": local}
    Path(job["out"], f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))


def run(job: dict) -> None:
    if job["kind"] == "rss":
        load_peak_rss(job)
        return
    if job["kind"] == "disagree":  # each rank holds another value: check_same must fail on every rank
        try:
            check_same("the sub-model of budget 1", f"rank {os.environ['RANK']}")
            message = "no error"
        except RuntimeError as e:
            message = f"RuntimeError: {e}"
        Path(job["out"], f"rank{os.environ['RANK']}.txt").write_text(message)
        return
    if job["kind"] == "allocations":
        with Allocations() as mode:
            ElasticTrainer(from_dict(TrainConfig, job["config"]), progress=False)
        Path(job["out"], f"rank{os.environ['RANK']}.json").write_text(json.dumps(mode.shapes))
        return
    if "report" in job:  # a job expected to fail: each rank writes down its error and goes on
        try:
            build_and_fit(job)
        except Exception as e:  # noqa: BLE001 -- any error, reported to the test
            Path(job["report"], f"rank{os.environ['RANK']}.txt").write_text(f"{type(e).__name__}: {e}\n")
        return
    trainer = build_and_fit(job)
    barrier()
    if trainer is not None and is_main():  # what the model's parameters are: DTensor shards under FSDP
        (Path(trainer.cfg.out) / "done").write_text(type(trainer.model.lm_head.weight).__name__)


def build_and_fit(job: dict):
    if job["kind"] == "elastic":
        trainer_cls, cfg = ElasticTrainer, from_dict(TrainConfig, job["config"])
    else:
        trainer_cls, cfg = PretrainTrainer, from_dict(PretrainConfig, job["config"])
    if "die_in_save" in job and int(os.environ["RANK"]) == job["die_in_save"]:
        import nemotron_elastic.train.state as state_mod

        real_save = state_mod.write_tensors

        def dying_save(path, tensors, metadata=None):
            if f"step-{job['die_in_save_step']:07d}" in str(path):
                os._exit(3)  # killed mid-save: no exception, no cleanup
            real_save(path, tensors, metadata)

        state_mod.write_tensors = dying_save
    stop_at = job.get("stop_at")
    if stop_at is not None and not job.get("resume"):
        assert trainer_cls(cfg, progress=False).fit(stop_at=stop_at) is None
        if job.get("then") == "stop":
            return None
    trainer = trainer_cls(cfg, resume=stop_at is not None, progress=False)
    trainer.fit()
    return trainer


def main(path: str) -> None:
    for job in json.loads(Path(path).read_text()):
        run(job)
    teardown()


if __name__ == "__main__":
    main(sys.argv[1])
