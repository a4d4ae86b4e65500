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

    real = phonemes.recognize_phones
    monkeypatch.setattr(phonemes, "recognize_phones", lambda wav: release.wait(30) or real(wav))
    settings = settings.model_copy(update={"job_timeout_s": LIMIT_S})
    result, took = _timed(single(settings), job("speech", lipsync="phonemes"))
    assert error_code(result) == "timeout" and took < LIMIT_S + SLACK_S, (result, took)
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
