"""Concurrent jobs in one worker process: 2 and 4 at once through the SDK's real local API server, each
output matching its own input (length and tint: no cross-talk), no temp files, fds or memory left over;
and JOB_CONCURRENCY reaching the SDK's JobScaler through `concurrency_modifier`."""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest

from avatar_engine.serving.handlers import concurrency_modifier, job_slots, sdk_config
from tests.serving.conftest import job
from tests.support.localapi import local_api_server

TINTS = [(1.0, 0.75, 0.75), (0.8, 1.0, 0.8), (0.75, 0.75, 1.0), (1.0, 1.0, 0.7)]
SECONDS = [1.0, 1.4, 1.8, 2.2]  # 25, 35, 45, 55 frames


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("concurrency")
    (tmp / "work").mkdir()
    with local_api_server(tmp, start_timeout_s=90, JOB_CONCURRENCY="4", WORK_DIR=str(tmp / "work")) as api:
        yield api.base, api.proc.pid, tmp / "work"


def _runsync(base: str, payload: dict) -> dict:
    request = urllib.request.Request(base + "/runsync", data=json.dumps({"input": payload["input"]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=180) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def _first_frame_mean(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    return frame.reshape(-1, 3).mean(0)


def _first_frame_mean_of_image(tint) -> np.ndarray:
    from PIL import Image

    from tests.serving.conftest import portrait

    return np.asarray(Image.open(io.BytesIO(portrait(tint))).convert("RGB"), np.float64).reshape(-1, 3).mean(0)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _round(base: str, n: int) -> float:
    """n jobs at once; checks each output against its own input; returns the wall time."""
    payloads = [job(f"c{i}", seconds=SECONDS[i], size=128, tint=TINTS[i], seed=i) for i in range(n)]
    expected = [_first_frame_mean_of_image(TINTS[i]) for i in range(n)]
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda p: _runsync(base, p), payloads))
    wall = time.perf_counter() - start
    for i, result in enumerate(results):
        assert result.get("status") == "COMPLETED", result
        out = result["output"]
        assert out["frames"] == round(SECONDS[i] * 25) and abs(out["duration_s"] - SECONDS[i]) < 0.01
        mean = _first_frame_mean(base64.b64decode(out["video_b64"]))
        nearest = int(np.argmin([np.abs(mean - m).sum() for m in expected]))
        assert nearest == i, (i, mean, expected)  # its own input's colours, never another job's
    return wall


def test_two_and_four_concurrent_jobs_soak(server):
    base, pid, work = server
    _round(base, 2)  # warm-up: first-job costs (encoder probe, caches) are not a leak
    fds_before, rss_before = len(os.listdir(f"/proc/{pid}/fd")), _rss_mb(pid)
    for n in (2, 4, 4, 4):
        _round(base, n)
    assert os.listdir(work) == []
    assert len(os.listdir(f"/proc/{pid}/fd")) <= fds_before + 2
    assert _rss_mb(pid) - rss_before < 60, (rss_before, _rss_mb(pid))


def test_job_concurrency_reaches_the_job_scaler(monkeypatch):
    from runpod.serverless.modules.rp_scale import JobScaler

    from avatar_engine.serving import handlers
    from avatar_engine.settings import Settings

    monkeypatch.setattr(handlers, "get_settings", lambda: Settings(job_concurrency=8))
    job_slots.cache_clear()
    try:
        scaler = JobScaler(sdk_config(lambda job: None))
        expected = min(8, os.cpu_count() or 1)  # a CPU worker: one job per core
        assert scaler.concurrency_modifier(1) == concurrency_modifier(1) == expected
        monkeypatch.setattr(handlers, "get_settings", lambda: Settings())
        job_slots.cache_clear()
        assert concurrency_modifier(1) == 1  # the default stays one job at a time
        monkeypatch.setattr(handlers, "_gpu_free_gb", lambda: 13.0)
        monkeypatch.setattr(handlers, "get_settings", lambda: Settings(job_concurrency=8))
        job_slots.cache_clear()
        assert concurrency_modifier(1) == 3  # a GPU worker: by free memory, GPU_GB_PER_JOB each
    finally:
        job_slots.cache_clear()
