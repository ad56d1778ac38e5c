# SPDX-License-Identifier: Apache-2.0
"""Shared timing helpers for the benchmarks: interleaved repeats, medians, JSON output."""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def time_interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each fn; the fns run in turn within every repeat so that machine noise
    (other processes, frequency changes) hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def step_arguments(doc: str, out: str) -> argparse.Namespace:
    """The command line shared by the step benchmarks: preset, batch, sequence length, repeats, bf16, out."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny-hybrid")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 weights)")
    ap.add_argument("--out", default=out)
    return ap.parse_args()


def teacher_and_student(preset: str) -> tuple[Any, Any, Any]:
    """(config, frozen teacher, trainable student copy) of a freshly initialised preset, seed 0."""
    from nemotron_elastic.config.presets import get_preset
    from nemotron_elastic.model import HybridLM

    torch.manual_seed(0)
    cfg = get_preset(preset)
    teacher = HybridLM(cfg)
    teacher.init_weights()
    teacher.requires_grad_(False).eval()
    return cfg, teacher, copy.deepcopy(teacher).requires_grad_(True).train()


def machine() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
    }


def write_json(name: str, payload: dict) -> Path:
    """Write `payload` to benchmarks/results/NAME (atomically, `nemotron_elastic.io.write_json`)."""
    from nemotron_elastic.io import write_json as write_atomic

    return write_atomic(RESULTS / name, payload)
