"""The GPU proof must not rot before a GPU is lent: its CPU quick mode runs every check here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # renders and a TorchScript trace: ~1-3 min on a shared 2-core CPU
def test_gpu_check_passes_in_cpu_quick_mode(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "scripts/gpu_check.py", "--quick", "--device", "cpu", "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"]["type"] == "cpu" and report["device"]["torch"]
    names = {c["name"] for c in report["checks"]}
    assert {"golden/wav2lip/fp32", "golden/wav2lip/fp16", "golden/fomm/generator/fp16", "nvenc", "oom_step_down",
            "bench/wav2lip", "files/fomm", "files/diff2lip"} <= names
    assert any(n.startswith("render/wav2lip") and "TorchScript" in n for n in names)
    assert all(c["ok"] and isinstance(c["seconds"], float) for c in report["checks"])
    assert "not available" in next(c for c in report["checks"] if c["name"] == "nvenc")["detail"]


def test_make_target_runs_the_script():
    assert "gpu-check:" in (REPO / "Makefile").read_text()
    assert "scripts/gpu_check.py" in (REPO / "Makefile").read_text()
