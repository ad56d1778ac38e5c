# SPDX-License-Identifier: Apache-2.0
"""Host memory of exporting a large sub-model (a 250 MB export of a 450 MB parent; about 12 s).

The parent is memory-mapped (file pages, not counted); the sub-model is one copy of the kept weights; its
files are written one tensor at a time (checkpoint/stream.py), and the check computes the sliced model's
logits and frees it before loading the written files. So the process' anonymous memory (RssAnon, polled
every 2 ms in a fresh process) grows by about one exported model, never two (measured: 1.22x native, 1.34x
HF; before streaming, 1.6x and more).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
import dataclasses, json, sys, threading
from pathlib import Path
import torch
from nemotron_elastic.checkpoint import save_native
from nemotron_elastic.config.presets import get_preset
from nemotron_elastic.config.spec import SubnetSpec
from nemotron_elastic.export import export_subnet
from nemotron_elastic.model import HybridLM

def rss_anon():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

root, fmt = Path(sys.argv[1]), sys.argv[2]
cfg = dataclasses.replace(get_preset("tiny-hybrid"), hidden_size=1024, intermediate_size=4096, vocab_size=8192,
                          mamba_num_heads=32, mamba_head_dim=64, num_attention_heads=16, num_key_value_heads=4,
                          head_dim=64, pattern="M-*-M-M-M-*-M-")
if not (root / "parent").exists():
    model = HybridLM(cfg)
    model.init_weights()
    save_native(model, root / "parent")
    del model
spec = SubnetSpec.from_dict({"hidden": 768, "mlp": 2048}, cfg)
exported = spec.param_count() * 4
base = rss_anon()
samples, stop = [base], threading.Event()
def poll():
    while not stop.is_set():
        samples.append(rss_anon())
        stop.wait(0.002)
thread = threading.Thread(target=poll, daemon=True)
thread.start()
try:
    export_subnet(root / "parent", root / f"out-{fmt}", spec=spec, fmt=fmt)
finally:
    stop.set()
    thread.join()
print(json.dumps({"ratio": (max(samples) - base) / exported, "exported_bytes": exported}))
'''


@pytest.mark.parametrize("fmt", ["native", "hf"])
def test_export_peak_memory_stays_under_one_and_a_half_exported_models(tmp_path_factory, fmt):
    root = tmp_path_factory.getbasetemp() / "export-memory"
    root.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(root), fmt], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exported_bytes"] > 2e8  # large enough for the model to dominate the process' own memory
    assert result["ratio"] < 1.5, result
