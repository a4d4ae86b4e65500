"""Cancelling a job the way the SDK does (JobScaler.stop_job cancels the job's asyncio task): rendering
stops within a second, the job's temp dir and bucket objects are gone, and the next job renders."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from avatar_engine.engines import ENGINES, PreparedRender
from tests.serving.conftest import job, sdk_run, single, streaming

FRAME_DELAY_S = 0.04  # ~10 s of rendering for 250 frames: plenty to cancel in the middle


@pytest.fixture
def counted_frames(monkeypatch):
    """The real embedded engine, slowed down per frame, counting the frames it has produced."""
    engine = ENGINES["parametric"]
    real_prepare = engine.prepare
    produced = {"n": 0}

    def prepare(render_job):
        prepared = real_prepare(render_job)

        def frames():
            for frame in prepared.frames:
                time.sleep(FRAME_DELAY_S)
                produced["n"] += 1
                yield frame

        return PreparedRender(frames(), prepared.info)

    monkeypatch.setattr(engine, "prepare", prepare)
    return produced


async def _cancel_mid_render(handler, payload, produced, runner, *, after_frames: int = 20,
                             before_stop=None) -> tuple[float, int]:
    """Start the job through the SDK's runner, stop it via JobScaler.stop_job once `after_frames` exist;
    return (seconds from the stop to the task's end, frames produced by then)."""
    from runpod.serverless.modules.rp_scale import JobScaler

    scaler = JobScaler({"handler": handler})
    task = asyncio.create_task(runner(handler, payload))
    scaler.jobs_tasks[payload["id"]] = task
    while produced["n"] < after_frames:
        assert not task.done(), task.result()
        await asyncio.sleep(0.02)
    if before_stop is not None:
        await asyncio.sleep(0.3)  # the first segment's upload
        before_stop()
    stopped_at = time.perf_counter()
    assert await scaler.stop_job(payload["id"])
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.perf_counter() - stopped_at, produced["n"]


async def _drain_generator(handler, payload):
    from runpod.serverless.modules import rp_job

    return [item async for item in rp_job.run_job_generator(handler, payload)]


async def _run(handler, payload):
    from runpod.serverless.modules import rp_job

    return await rp_job.run_job(handler, payload)


@pytest.mark.parametrize("kind", ["single", "stream"])
def test_cancel_mid_render_stops_within_a_second_and_leaves_nothing(settings, counted_frames, kind):
    handler, runner = (single(settings), _run) if kind == "single" else (streaming(settings), _drain_generator)
    payload = job(f"cancel-{kind}", seconds=10.0, size=256)
    took, frames_at_stop = asyncio.run(_cancel_mid_render(handler, payload, counted_frames, runner))
    assert took <= 1.0, took
    time.sleep(0.3)
    assert counted_frames["n"] <= frames_at_stop + 1  # rendering really stopped
    assert os.listdir(settings.work_dir) == []  # the temp dir (render.mp4, live segments) is gone

    result = sdk_run(single(settings), job("after-cancel", seconds=1.0, size=128))
    assert "error" not in result and result["output"]["frames"] == 25


def test_cancel_of_a_bucket_stream_removes_its_objects(bucket_stream_settings, counted_frames):
    settings, objects = bucket_stream_settings
    payload = job("cancel-hls", seconds=10.0, size=256)
    seen = {}
    took, _ = asyncio.run(_cancel_mid_render(streaming(settings), payload, counted_frames, _drain_generator,
                                             after_frames=60, before_stop=lambda: seen.update(names=objects())))
    assert any(n.endswith("index.m3u8") for n in seen["names"]) and any(n.endswith(".m4s") for n in seen["names"])
    assert took <= 1.0, took
    assert objects() == []  # playlist and any uploaded segments deleted
    assert os.listdir(settings.work_dir) == []


@pytest.fixture
def bucket_stream_settings(settings, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    from tests.support.gcs import gcs_emulator, service_account_json

    with gcs_emulator("avatar-cancel") as port:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        prefix = f"cancel-{time.time_ns()}/"
        client = gcs.Client(project="avatar-cancel", credentials=AnonymousCredentials())
        yield (settings.model_copy(update={"media_bucket": "avatar-cancel", "media_prefix": prefix,
                                           "gcs_credentials_json": service_account_json("avatar-cancel")}),
               lambda: [b.name for b in client.list_blobs("avatar-cancel", prefix=prefix)])
