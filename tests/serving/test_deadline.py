"""One deadline for the whole job: a stalled DNS lookup, a slow speech analysis and a stalled upload
each end in `timeout` at JOB_TIMEOUT_S (run through the SDK's run_job), leaving nothing behind."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest
from pydantic import SecretStr

from tests.serving.conftest import error_code, job, sdk_run, single
from tests.support.gcs import gcs_emulator, service_account_json

LIMIT_S = 1.5
SLACK_S = 0.6  # thread hand-off and cleanup after the deadline


@pytest.fixture
def release():
    """Set at teardown: lets every stalled helper thread finish."""
    event = threading.Event()
    yield event
    event.set()


def _timed(handler, payload) -> tuple[dict, float]:
    start = time.perf_counter()
    result = sdk_run(handler, payload)
    return result, time.perf_counter() - start


def test_dns_stall_ends_in_timeout_on_time(settings, monkeypatch, release):
    real = socket.getaddrinfo

    def stalled(host, *args, **kwargs):
        if host == "stalled-dns.example":
            release.wait(30)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", stalled)
    settings = settings.model_copy(update={"job_timeout_s": LIMIT_S, "fetch_connect_timeout_s": 30.0})
    payload = job("dns")
    del payload["input"]["image_b64"]
    payload["input"]["image_url"] = "http://stalled-dns.example/portrait.png"
    result, took = _timed(single(settings), payload)
    assert error_code(result) == "timeout" and took < LIMIT_S + SLACK_S, (result, took)
    assert os.listdir(settings.work_dir) == []


def test_dns_stall_past_the_connect_timeout_is_a_fetch_failure(settings, monkeypatch, release):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(30))
    settings = settings.model_copy(update={"job_timeout_s": 30.0, "fetch_connect_timeout_s": 0.5})
    payload = job("dns-own-timeout")
    payload["input"]["audio_url"] = "http://stalled-dns.example/speech.wav"
    del payload["input"]["audio_b64"]
    result, took = _timed(single(settings), payload)
    assert error_code(result) == "fetch_failed" and took < 0.5 + SLACK_S, (result, took)


def test_slow_speech_analysis_ends_in_timeout_on_time(settings, monkeypatch, release):
    from avatar_engine.speech import phonemes

    real = phonemes.recognize_stream

    def stalled(wav, check=None):
        release.wait(30)
        yield from real(wav, check)

    monkeypatch.setattr(phonemes, "recognize_stream", stalled)
    settings = settings.model_copy(update={"job_timeout_s": LIMIT_S})
    result, took = _timed(single(settings), job("speech", lipsync="phonemes"))
    assert error_code(result) == "timeout" and took < LIMIT_S + SLACK_S, (result, took)
    assert os.listdir(settings.work_dir) == []


LONG_SPEECH_S = 150.0  # pocketsphinx needs ~5 s for it: it used to hold the interpreter throughout
LONG_LIMIT_S = 2.5  # past decoding 150 s of audio, inside its recognition


def test_engine_stops_at_the_deadline_during_phone_recognition(settings):
    """The engine itself (decoding done beforehand): frames of long English speech stop at the deadline
    within a fraction of a second, however long the recognition of the whole clip would take."""
    from avatar_engine.audio.frames import frame_count
    from avatar_engine.audio.io import decode_audio
    from avatar_engine.engines import ENGINES
    from avatar_engine.engines.base import RenderJob
    from avatar_engine.errors import AvatarError
    from avatar_engine.media.image import decode_image, fit_image
    from avatar_engine.schema import parse_request
    from avatar_engine.serving.deadline import Deadline
    from tests.serving.conftest import portrait, speech

    audio = decode_audio(speech(LONG_SPEECH_S), max_seconds=300, min_seconds=0.2)
    image = fit_image(decode_image(portrait(), max_pixels=10 ** 8), 256)
    n = frame_count(audio.duration_s, 25)
    start = time.perf_counter()
    job_ = RenderJob(request=parse_request({"lipsync": "phonemes"}, local=True), image=image, audio=audio, fps=25,
                     n_frames=n, settings=settings, source_scale=2.0, deadline=Deadline(0.5))
    with pytest.raises(AvatarError) as err:
        for _ in ENGINES["parametric"].prepare(job_).frames:
            pass
    assert err.value.code == "timeout" and time.perf_counter() - start < 0.5 + SLACK_S


def test_long_english_speech_times_out_within_a_second(settings):
    """Real phone recognition of long speech never holds the interpreter: the timeout arrives on time."""
    settings = settings.model_copy(update={"job_timeout_s": LONG_LIMIT_S})
    result, took = _timed(single(settings), job("long-speech", seconds=LONG_SPEECH_S, size=128, lipsync="phonemes"))
    assert error_code(result) == "timeout" and took < LONG_LIMIT_S + 1.0, (result, took)
    assert os.listdir(settings.work_dir) == []


def test_long_transcript_alignment_times_out_within_a_second(settings):
    """Forced alignment (captions of recorded speech) is fed in short pieces with the deadline between them."""
    settings = settings.model_copy(update={"job_timeout_s": LONG_LIMIT_S})
    payload = job("long-align", seconds=LONG_SPEECH_S, size=128, captions="srt",
                  transcript="the quick brown fox jumps over the lazy dog " * 120)
    result, took = _timed(single(settings), payload)
    assert error_code(result) == "timeout" and took < LONG_LIMIT_S + 1.0, (result, took)


def test_cancel_during_long_phone_recognition_within_a_second(settings):
    """The SDK's stop-job path during recognition of long speech: the job's task ends within a second."""
    import asyncio

    from runpod.serverless.modules import rp_job
    from runpod.serverless.modules.rp_scale import JobScaler

    handler = single(settings.model_copy(update={"job_timeout_s": 60.0}))
    payload = job("cancel-speech", seconds=LONG_SPEECH_S, size=128, lipsync="phonemes")

    async def scenario() -> float:
        scaler = JobScaler({"handler": handler})
        task = asyncio.create_task(rp_job.run_job(handler, payload))
        scaler.jobs_tasks[payload["id"]] = task
        await asyncio.sleep(LONG_LIMIT_S)  # decoded; recognising (and rendering beside it)
        assert not task.done(), task.result()
        stopped_at = time.perf_counter()
        assert await scaler.stop_job(payload["id"])
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - stopped_at

    assert asyncio.run(scenario()) <= 1.0
    time.sleep(0.3)
    assert os.listdir(settings.work_dir) == []


@pytest.fixture(scope="module")
def stalling_bucket():
    from tests.support.proxy import BucketProxy

    with gcs_emulator("avatar-deadline") as port:
        proxy = BucketProxy(port)
        yield proxy
        proxy.close()


def test_stalled_upload_ends_in_timeout_on_time_with_no_object_left(settings, stalling_bucket, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", stalling_bucket.url)
    prefix = f"deadline-{uuid.uuid4().hex}/"
    limit_s = 3.0  # the render (~0.5 s) fits; the upload's own 120 s read timeout and 600 s retry budget do not
    settings = settings.model_copy(update={
        "job_timeout_s": limit_s, "media_bucket": "avatar-deadline", "media_prefix": prefix,
        "gcs_credentials_json": SecretStr(service_account_json("avatar-deadline"))})
    stalling_bucket.mode, stalling_bucket.uploads = "stall", 0
    stalling_bucket.release.clear()
    try:
        result, took = _timed(single(settings), job("upload", seconds=1.0, size=128))
    finally:
        stalling_bucket.mode = None
        stalling_bucket.release.set()
    assert error_code(result) == "timeout" and took < limit_s + SLACK_S, (result, took)
    assert stalling_bucket.uploads >= 1
    client = gcs.Client(project="avatar-deadline", credentials=AnonymousCredentials())
    deadline = time.monotonic() + 6  # the abandoned attempt deletes what the server kept once it returns
    while [b.name for b in client.list_blobs("avatar-deadline", prefix=prefix)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [b.name for b in client.list_blobs("avatar-deadline", prefix=prefix)] == []
    assert os.listdir(settings.work_dir) == []
