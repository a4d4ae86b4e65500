"""STREAM_OUTPUT: the generator handler yields live video while it renders, through the SDK's own
generator runner; inline fMP4 chunks without a bucket, an HLS playlist in the bucket with one."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.request

import av
import pytest

from avatar_engine.media.hls import INLINE_CHUNK_BYTES
from tests.serving.conftest import job, streaming
from tests.support.gcs import gcs_emulator, service_account_json
from tests.support.media import REPO

BUCKET = "avatar-live"


def collect(handler, payload: dict) -> list[tuple[float, dict]]:
    """(seconds since start, output) of every item the SDK's run_job_generator passes on."""
    from runpod.serverless.modules import rp_job

    async def run():
        start, out = time.perf_counter(), []
        async for item in rp_job.run_job_generator(handler, payload):
            assert "error" not in item, item
            out.append((time.perf_counter() - start, item["output"]))
        return out

    return asyncio.run(run())


def probe(data: bytes) -> tuple[int, float]:
    """(decoded video frames, duration in seconds) of an MP4 / fragmented MP4."""
    with av.open(io.BytesIO(data)) as c:
        frames = sum(1 for _ in c.decode(video=0))
        stream = c.streams.video[0]
        return frames, float(stream.duration * stream.time_base) if stream.duration else c.duration / 1e6


def test_handler_is_a_generator_only_in_a_streaming_deployment(tmp_path):
    code = "import inspect, handler; print(inspect.isasyncgenfunction(handler.handler), " \
           "inspect.iscoroutinefunction(handler.handler))"
    seen = {}
    for flag in ("true", "false"):
        env = {**os.environ, "STREAM_OUTPUT": flag, "MODEL_ROOT": str(tmp_path), "MEDIA_BUCKET": "",
               "PYTHONPATH": str(REPO), "LOG_LEVEL": "WARNING"}
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        seen[flag] = out.stdout.split()[-2:]
    assert seen == {"true": ["True", "False"], "false": ["False", "True"]}


def test_inline_stream_arrives_before_the_job_ends_and_plays(settings):
    events = collect(streaming(settings), job("inline", seconds=7.0, size=512))
    final_at, final = events[-1]
    assert "video_b64" in final and final["engine"] == "parametric"
    chunks = [(t, e) for t, e in events if e.get("event") == "chunk"]
    assert events[0][1]["event"] == "stream" and len(chunks) >= 4
    first_at = chunks[0][0]
    assert first_at < final_at - 0.2, (first_at, final_at)  # the first segment came while rendering
    assert all(len(base64.b64decode(e["data_b64"])) <= INLINE_CHUNK_BYTES for _, e in chunks)
    assert all(len(json.dumps(e)) < 1_000_000 for _, e in chunks)  # the SDK's stream-chunk limit
    live = b"".join(base64.b64decode(e["data_b64"]) for _, e in chunks)
    frames, duration = probe(live)
    final_frames, final_duration = probe(base64.b64decode(final["video_b64"]))
    assert frames == final_frames == final["frames"]
    assert abs(duration - final_duration) < 0.1  # AAC priming is the only difference
    assert final["timings_ms"]["first_segment"] < final["timings_ms"]["total"]
    assert os.listdir(settings.work_dir) == []


@pytest.fixture(scope="module")
def emulator():
    with gcs_emulator(BUCKET) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def bucket_settings(settings, emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    return settings.model_copy(update={"media_bucket": BUCKET, "gcs_credentials_json": service_account_json("live"),
                                       "media_prefix": f"live-{time.time_ns()}/"})


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback emulator
        return resp.read()


def test_hls_playlist_url_comes_first_and_segments_follow_as_encoded(bucket_settings):
    events = collect(streaming(bucket_settings), job("hls", seconds=6.0, size=256, seed=3))
    first = events[0][1]
    assert first["event"] == "playlist" and "X-Goog-Signature=" in first["playlist_url"]
    segments = [(t, e) for t, e in events if e.get("event") == "segment"]
    final_at, final = events[-1]
    assert len(segments) == 3 and segments[0][0] < final_at
    assert events[-2][1]["event"] == "end" and final["video_url"] and final["cached"] is False
    playlist = _get(first["playlist_url"]).decode()
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    init_url = playlist.split('#EXT-X-MAP:URI="', 1)[1].split('"', 1)[0]
    listed = [line for line in playlist.splitlines() if line.startswith("http")]
    assert listed == [e["url"] for _, e in segments]
    live = _get(init_url) + b"".join(_get(url) for url in listed)
    frames, duration = probe(live)
    final_frames, final_duration = probe(_get(final["video_url"]))
    assert frames == final_frames and abs(duration - final_duration) < 0.1
