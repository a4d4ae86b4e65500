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


def start_times(data: bytes) -> tuple[float, float]:
    """(video, audio) stream start_time in seconds, as a player lines them up."""
    with av.open(io.BytesIO(data)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        return float(v.start_time * v.time_base), float(a.start_time * a.time_base)


def copy_remux(data: bytes) -> bytes:
    """`ffmpeg -i live.mp4 -c copy out.mp4`, with PyAV."""
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(out, "w", format="mp4") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("audio", "video")}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    return out.getvalue()


def test_inline_stream_arrives_before_the_job_ends_and_plays(settings):
    """The chunks are the delivery (#22 item 3): a clip over MAX_BASE64_BYTES still completes, the last item
    refers to the chunks instead of repeating the MP4, and audio and video start together."""
    small = settings.model_copy(update={"max_base64_bytes": 20_000})
    events = collect(streaming(small), job("inline", seconds=7.0, size=512))
    final_at, final = events[-1]
    assert "error" not in final and "video_b64" not in final and final["engine"] == "parametric"
    chunks = [(t, e) for t, e in events if e.get("event") == "chunk"]
    assert events[0][1]["event"] == "stream" and len(chunks) >= 4
    first_at = chunks[0][0]
    assert first_at < final_at - 0.2, (first_at, final_at)  # the first segment came while rendering
    assert all(len(base64.b64decode(e["data_b64"])) <= INLINE_CHUNK_BYTES for _, e in chunks)
    assert all(len(json.dumps(e)) < 1_000_000 for _, e in chunks)  # the SDK's stream-chunk limit
    assert len(json.dumps(final)) < 10_000  # the aggregate carries the video once
    live = b"".join(base64.b64decode(e["data_b64"]) for _, e in chunks)
    end = events[-2][1]
    assert end["event"] == "end" and end["chunks"] == len(chunks) == final["video_stream"]["chunks"]
    assert final["video_bytes"] == end["bytes"] == len(live) > small.max_base64_bytes
    frames, duration = probe(live)
    assert frames == final["frames"] and abs(duration - final["duration_s"]) < 0.1
    assert final["timings_ms"]["first_segment"] < final["timings_ms"]["total"]
    for data in (live, copy_remux(live)):  # audio and video start together (was 64 ms apart: 1.6 frames)
        video_start, audio_start = start_times(data)
        assert abs(video_start - audio_start) < 0.5 / 25, (video_start, audio_start)
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


def test_cache_hit_streams_the_cached_video_and_a_full_result(bucket_settings):
    """#22 item 3: the second identical job is a cache hit; it still yields playlist, segments and end, and a
    result with the render's fields (encoder, chain, lipsync)."""
    handler = streaming(bucket_settings)
    first = collect(handler, job("hls-a", seconds=3.0, size=256, seed=5))
    second = collect(handler, job("hls-b", seconds=3.0, size=256, seed=5))
    rendered, cached = first[-1][1], second[-1][1]
    assert rendered["cached"] is False and cached["cached"] is True
    for key in ("engine", "chain", "encoder", "lipsync", "frames", "width", "height", "quality_mode"):
        assert cached[key] == rendered[key], key
    kinds = [e.get("event") for _, e in second[:-1]]
    assert kinds[0] == "playlist" and kinds[-1] == "end" and kinds.count("segment") == 2
    playlist = _get(second[0][1]["playlist_url"]).decode()
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    init_url = playlist.split('#EXT-X-MAP:URI="', 1)[1].split('"', 1)[0]
    live = _get(init_url) + b"".join(_get(line) for line in playlist.splitlines() if line.startswith("http"))
    frames, _ = probe(live)
    assert frames == rendered["frames"]
    video_start, audio_start = start_times(live)
    assert abs(video_start - audio_start) < 0.5 / 25
