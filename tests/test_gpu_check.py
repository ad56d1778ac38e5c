# SPDX-License-Identifier: Apache-2.0
"""benchmarks/gpu_check.py --dry-run: every stage but the test suite runs with micro sizes on the CPU, so the
prepared GPU check cannot rot between GPU sessions."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_passes_every_stage(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and set(result["stages"]) == {"parity", "kernels", "scoring", "train", "pipeline", "serve"}
    assert all(stage["ok"] for stage in result["stages"].values())
    train = result["stages"]["train"]
    assert train["compile=False"]["tokens_per_s"] > 0 and train["compile=False"]["peak_memory_gib"] > 0
    serve = result["stages"]["serve"]
    assert set(serve["decode_tokens_per_s"]) == set(serve["decode8_tokens_per_s"]) == {"1.0", "0.75", "0.5"}
    assert set(serve["churn8_tokens_per_s"]) == {"churn8@1", "churn8@0.5", "churn8@mixed"}
    parts = ("decode_tokens_per_s", "decode8_tokens_per_s", "churn8_tokens_per_s")
    assert all(v > 0 for part in parts for v in serve[part].values())
    scoring = result["stages"]["scoring"]  # the dry run's "device" is the CPU: the same scores
    assert scoring["fp32_max_rel_diff"] == 0.0 and scoring["fp32_same_order"] and scoring["bf16_min_spearman"] > 0.5
    assert "## train: ok" in (tmp_path / "gpu_check.md").read_text()
