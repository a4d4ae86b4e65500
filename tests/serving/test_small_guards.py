"""Issue #22 item 11: small input and configuration guards at the request boundary."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import pytest
from pydantic import ValidationError

from avatar_engine.errors import AvatarError, parse_error, redact_paths
from avatar_engine.media.fetch import decode_base64, fetch_url
from avatar_engine.schema import parse_request
from avatar_engine.serving import handlers
from avatar_engine.serving.worker import error_result
from avatar_engine.settings import Settings


def test_empty_reference_video_b64_is_invalid_input():
    with pytest.raises(AvatarError) as err:
        parse_request({"image_url": "https://example.com/a.png", "audio_url": "https://example.com/a.wav",
                       "reference_video_b64": ""})
    assert err.value.code == "invalid_input" and "reference_video_b64 is empty" in err.value.message


def test_url_port_zero_is_invalid_input(settings):
    with pytest.raises(AvatarError) as err:
        fetch_url("http://127.0.0.1:0/image.png", field="image_url", max_bytes=1000, settings=settings)
    assert err.value.code == "invalid_input" and "port" in err.value.message


@pytest.mark.parametrize("size", [1, 2, 3, 1000, 1001, 1002])
def test_base64_accepts_a_payload_exactly_at_the_cap(size):
    data = bytes(range(256)) * 4
    data = data[:size]
    text = base64.b64encode(data).decode()
    assert decode_base64(text, field="image_b64", max_bytes=size) == data
    assert decode_base64(text.rstrip("="), field="image_b64", max_bytes=size) == data
    with pytest.raises(AvatarError) as err:
        decode_base64(text, field="image_b64", max_bytes=size - 1)
    assert err.value.code == "input_too_large"


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_job_timeout_must_be_positive(monkeypatch, value):
    monkeypatch.setenv("JOB_TIMEOUT_S", value)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "JOB_TIMEOUT_S must be a positive number of seconds" in str(err.value)


def test_engine_unavailable_messages_carry_no_worker_paths():
    exc = AvatarError("engine_unavailable", "checkpoint /models/wav2lip/wav2lip_gan.pth does not exist; "
                                            "SadTalker checkpoints incomplete in /srv/models/sadtalker/")
    body = parse_error(error_result(exc)["error"])
    assert "/models" not in body["message"] and "/srv" not in body["message"]
    assert "wav2lip_gan.pth" in body["message"]
    assert redact_paths("from https://host.example/a/b.png") == "from https://host.example/a/b.png"


def test_invalid_job_does_not_wait_for_a_slot(monkeypatch, settings):
    """A bad request is answered while every slot is held by a long render."""
    monkeypatch.setattr(handlers, "concurrency_modifier", lambda current: 1)
    release = threading.Event()
    monkeypatch.setattr(handlers, "run_job", lambda job, **kw: release.wait(10) and {"ok": True})

    async def scenario():
        busy = asyncio.ensure_future(handlers.run_async({"id": "a", "input": {
            "image_url": "https://example.com/a.png", "audio_url": "https://example.com/a.wav"}}, settings=settings))
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        bad = await asyncio.wait_for(handlers.run_async({"id": "b", "input": {"fps": 5}}, settings=settings), 2)
        took = time.perf_counter() - t0
        streamed = [item async for item in handlers.stream_async({"id": "c", "input": []}, settings=settings)]
        release.set()
        await busy
        return bad, took, streamed

    handlers._semaphores.clear()
    bad, took, streamed = asyncio.run(scenario())
    assert json.loads(bad["error"])["code"] == "invalid_input" and took < 1.0
    assert len(streamed) == 1 and json.loads(streamed[0]["error"])["code"] == "invalid_input"
