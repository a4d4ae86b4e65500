"""A `STREAM_OUTPUT=true` deployment as the client and batch see it: the job's output is the list of
streamed items (live events first, the result or the error last), on the hosted API and the local server."""

from __future__ import annotations

import json

import pytest

from avatar_engine.clients.batch import BatchOptions, run_batch
from avatar_engine.clients.endpoint import AvatarClient, ClientConfig, JobFailed, JobStatus
from tests.clients.fake_hosted import FakeHosted, fast_client

EVENTS = [{"event": "playlist", "format": "hls", "playlist_url": "https://cdn.example/p.m3u8", "segment_s": 1.0},
          {"event": "segment", "index": 0, "url": "https://cdn.example/s0.m4s", "duration_s": 1.0},
          {"event": "end", "segments": 1}]
RESULT = {"video_url": "https://cdn.example/v.mp4", "frames": 53, "engine": "parametric",
          "timings_ms": {"total": 700.0}}
NO_FACE = {"error": json.dumps({"code": "no_face", "message": "no face was found"})}



@pytest.fixture
def streaming():
    fake = FakeHosted()
    yield fake
    fake.close()


def test_streamed_output_renders(streaming):
    streaming.output = [*EVENTS, RESULT]
    client = fast_client(streaming)
    result = client.render({"image_url": "https://x/p.png", "audio_url": "https://x/a.wav"}, timeout_s=10)
    assert result.video_url == RESULT["video_url"] and result.frames == 53
    final = client.run_sync({"image_url": "u", "audio_url": "u"})
    assert final.ok and final.output == RESULT and final.chunks == EVENTS


def test_streamed_error_keeps_its_code(streaming):
    streaming.output = [EVENTS[0], NO_FACE]
    client = fast_client(streaming)
    with pytest.raises(JobFailed) as caught:
        client.render({"image_url": "u", "audio_url": "u"}, timeout_s=10)
    assert caught.value.code == "no_face" and caught.value.message == "no face was found"
    assert client.run_sync({"image_url": "u", "audio_url": "u"}).error["code"] == "no_face"


def test_local_server_stream_shapes():
    """The SDK's local server: /status of a generator job is COMPLETED with the items; /stream lists them."""
    body = {"id": "test-1", "status": "COMPLETED", "output": [*EVENTS, NO_FACE]}
    status = JobStatus.parse(body)
    assert (status.status, status.error["code"], status.failure().code) == ("FAILED", "no_face", "no_face")
    assert JobStatus.parse({"id": "x", "status": "COMPLETED", "output": []}).failure().code == "internal"


def test_stream_raises_an_error_item(streaming, monkeypatch):
    client = fast_client(streaming)
    job = client.run({"image_url": "u", "audio_url": "u"})
    answers = iter([{"id": job.id, "status": "COMPLETED", "stream": [{"output": EVENTS[0]}, {"output": NO_FACE}]}])
    monkeypatch.setattr(client, "_request", lambda *a, **k: next(answers))
    seen = []
    with pytest.raises(JobFailed) as caught:
        for item in client.stream(job.id, timeout_s=5):
            seen.append(item)
    assert seen == [EVENTS[0]] and caught.value.code == "no_face"


def test_batch_against_a_streaming_endpoint(streaming, tmp_path):
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps({"row_id": f"r{i}", "image_url": "u", "audio_url": "u", "seed": i}) + "\n"
                                for i in range(2)))
    streaming.output = [*EVENTS, RESULT]
    summary = run_batch(manifest, client=fast_client(streaming), out_dir=tmp_path / "out",
                        options=BatchOptions(progress=False, concurrency=1))
    assert (summary.completed, summary.failed, summary.pending) == (2, 0, 0)
    rows = json.loads((tmp_path / "out" / "state.json").read_text())["rows"]
    assert {r["video"] for r in rows.values()} == {RESULT["video_url"]}

    streaming.output = [EVENTS[0], NO_FACE]
    summary = run_batch(manifest, client=fast_client(streaming), out_dir=tmp_path / "out2",
                        options=BatchOptions(progress=False, concurrency=1))
    assert (summary.failed, summary.pending, summary.errors) == (2, 0, {"no_face": 2})


@pytest.mark.slow
def test_real_streaming_server(tmp_path, quick_input):
    """The SDK's local server running handler.py with STREAM_OUTPUT=true: a render and a failure."""
    from tests.support.localapi import local_api_server

    with local_api_server(tmp_path, STREAM_OUTPUT="true") as api:
        client = AvatarClient(ClientConfig(base_url=api.base))
        status = client.run_sync({**quick_input, "size": 128}, timeout_s=120)
        assert status.ok and status.chunks and status.result().frames == 53
        assert status.result().video_b64 and "video_b64" not in status.output  # joined from the chunks
        assert client.render({**quick_input, "size": 128}, timeout_s=120).frames == 53
        bad = {**quick_input, "image_b64": "bm90IGFuIGltYWdl" * 8}
        with pytest.raises(JobFailed) as caught:
            client.render(bad, timeout_s=120)
        assert caught.value.code == "unsupported_media"


def test_inline_chunks_are_the_video(streaming):
    """Without a bucket the last item refers to the chunks (#22 item 3); the client joins them into the video."""
    import base64

    parts = [b"init+seg0", b"seg1", b"seg2"]
    chunks = [{"event": "stream", "format": "fmp4"},
              {"event": "chunk", "index": 0, "data_b64": base64.b64encode(b"old").decode()},
              {"event": "restart", "reason": "the engine failed"},
              *[{"event": "chunk", "index": i, "data_b64": base64.b64encode(p).decode()} for i, p in enumerate(parts)],
              {"event": "end", "chunks": 3}]
    streaming.output = [*chunks, {"video_stream": {"format": "fmp4", "chunks": 3, "segments": 2},
                                  "video_bytes": 17, "frames": 53}]
    result = fast_client(streaming).render({"image_url": "u", "audio_url": "u"}, timeout_s=10)
    assert base64.b64decode(result.video_b64) == b"".join(parts) and result.frames == 53
