# SPDX-License-Identifier: Apache-2.0
"""One rank of multi-process training runs, started by test_distributed.py with torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

    python dist_worker.py JOBS.json

JOBS.json is a list of {"kind": "elastic" | "pretrain", "config": {...}, "stop_at": k | null}, run in
order in the same processes (torch and transformers are imported once: most of a tiny run's time). With
`stop_at`, the run stops after step k with a checkpoint and a new trainer resumes it to the end. Rank 0
marks each finished job with `<out>/done` (holding the type of the trained parameters), so the tests can
tell which job failed. A job with "report": FOLDER is expected to fail: each rank writes its error there.
"""

import json
import os
import sys
from pathlib import Path

from nemotron_elastic.config.run import PretrainConfig, TrainConfig
from nemotron_elastic.config.types import from_dict
from nemotron_elastic.train.distributed import barrier, is_main, teardown
from nemotron_elastic.train.elastic import ElasticTrainer
from nemotron_elastic.train.pretrain import PretrainTrainer


def run(job: dict) -> None:
    if "report" in job:  # a job expected to fail: each rank writes down its error and goes on
        try:
            build_and_fit(job)
        except Exception as e:  # noqa: BLE001 -- any error, reported to the test
            Path(job["report"], f"rank{os.environ['RANK']}.txt").write_text(f"{type(e).__name__}: {e}\n")
        return
    trainer = build_and_fit(job)
    barrier()
    if is_main():  # what the model's parameters are: DTensor shards under FSDP
        (Path(trainer.cfg.out) / "done").write_text(type(trainer.model.lm_head.weight).__name__)


def build_and_fit(job: dict):
    if job["kind"] == "elastic":
        trainer_cls, cfg = ElasticTrainer, from_dict(TrainConfig, job["config"])
    else:
        trainer_cls, cfg = PretrainTrainer, from_dict(PretrainConfig, job["config"])
    stop_at = job.get("stop_at")
    if stop_at is not None:
        assert trainer_cls(cfg, progress=False).fit(stop_at=stop_at) is None
    trainer = trainer_cls(cfg, resume=stop_at is not None, progress=False)
    trainer.fit()
    return trainer


def main(path: str) -> None:
    for job in json.loads(Path(path).read_text()):
        run(job)
    teardown()


if __name__ == "__main__":
    main(sys.argv[1])
