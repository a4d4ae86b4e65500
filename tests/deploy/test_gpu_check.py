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
            "bench/wav2lip", "files/fomm", "files/diff2lip", "golden/musetalk", "golden/wav2lip/5d/fp32",
            "golden/wav2lip/mel/fp32", "golden/fomm/dense_motion/fp16", "golden/sadtalker/audio2exp/fp16",
            "golden/sadtalker/mappingnet_full/fp16", "golden/sadtalker/reconnet/fp32"} <= names
    assert all("tolerance" in c["detail"] or "not compared" in c["detail"] or "fp32 only" in c["detail"]
               for c in report["checks"] if c["name"].startswith("golden/") and c["name"] != "golden/musetalk")
    assert any(n.startswith("render/wav2lip") and "TorchScript" in n for n in names)
    assert all(c["ok"] and isinstance(c["seconds"], float) for c in report["checks"])
    assert "not available" in next(c for c in report["checks"] if c["name"] == "nvenc")["detail"]


def test_make_target_runs_the_script():
    assert "gpu-check:" in (REPO / "Makefile").read_text()
    assert "scripts/gpu_check.py" in (REPO / "Makefile").read_text()


# host-side and exact (numpy/OpenCV crop boxes and paste-back masks): no network, no device path
CPU_ONLY_GOLDENS = {"musetalk/golden_geometry.npz"}


def test_every_golden_fixture_is_in_the_gpu_proof():
    """Each float32 golden of tests/fixtures is one of gpu_check's (float64 references stay CPU-only)."""
    source = (REPO / "tests/support/device_goldens.py").read_text()
    fixtures = REPO / "tests/fixtures"

    def named(path: Path) -> bool:
        short = path.stem.removeprefix("golden_")
        rel = str(path.relative_to(fixtures))
        return rel in source or f'("{short}")' in source or f'"{short}", ' in source or rel in CPU_ONLY_GOLDENS

    missing = [str(path.relative_to(fixtures)) for path in sorted(fixtures.glob("*/golden*.npz"))
               if not path.stem.endswith("_f64") and not named(path)]
    assert not missing, f"goldens the GPU proof does not run: {missing} (add them to device_goldens.GOLDENS)"
