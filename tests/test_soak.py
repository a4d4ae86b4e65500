"""A warm worker over 50 mixed jobs (scripts/soak.py in its own process, so pytest's memory and
descriptors do not blur the figures): no growth, no leaks, every job answered as it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_50_jobs_meets_targets(tmp_path):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "soak.py"), "--jobs", "50", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=170,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "HOME": str(home), "TMPDIR": str(tmp)},
    )
    report = json.loads(proc.stdout)
    assert report["failures"] == []
    assert report["rss_growth_mb"] <= 50, report["rss_mb_trace"]
    assert report["fds_leaked"] == 0 and report["threads_leaked"] == 0
    assert report["temp_files_left"] == []
    assert report["latency"]["valid"]["n"] == 25 and report["latency"]["invalid"]["n"] == 25
    assert report["missed_targets"] == [] and proc.returncode == 0, proc.stderr[-2000:]
    assert list(tmp.iterdir()) == [], "the soak's own temp root was not removed"
