"""Shared pieces of the job-lifecycle tests: inputs of a chosen length and tint, and the SDK's own
job runners (rp_job.run_job / run_job_generator) driving our async handlers."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import wave

import numpy as np
import pytest
from PIL import Image
from runpod.serverless.modules import rp_job  # imported here: its import (~1.5 s) must not count as job time

from avatar_engine.errors import parse_error
from avatar_engine.serving.handlers import run_async, stream_async
from avatar_engine.serving.worker import warm_up
from tests.support.media import asset_bytes


@pytest.fixture(scope="session", autouse=True)
def _warm():
    warm_up()  # what handler.py does at import: jobs are timed on a warm worker


def speech(seconds: float) -> bytes:
    """The bundled speech repeated to `seconds`, as a 16 kHz mono WAV."""
    with wave.open(io.BytesIO(asset_bytes("speech_16k.wav"))) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    n = int(seconds * 16000)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(np.tile(pcm, n // len(pcm) + 1)[:n].tobytes())
    return buf.getvalue()


def portrait(tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> bytes:
    """The bundled portrait with its channels scaled by `tint` (tells concurrent jobs' outputs apart)."""
    rgb = np.asarray(Image.open(io.BytesIO(asset_bytes("astronaut_512.png"))).convert("RGB"), np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb * np.array(tint, np.float32), 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def job(job_id: str, *, seconds: float = 2.0, size: int = 256, tint=(1.0, 1.0, 1.0), **extra) -> dict:
    return {"id": job_id, "input": {"image_b64": base64.b64encode(portrait(tint)).decode(),
                                    "audio_b64": base64.b64encode(speech(seconds)).decode(),
                                    "size": size, "engine": "parametric", **extra}}


def single(settings):
    """Our default handler bound to test settings (what handler.py registers, minus the env)."""
    return functools.partial(run_async, settings=settings)


def streaming(settings):
    return functools.partial(stream_async, settings=settings)


def sdk_run(handler, payload: dict) -> dict:
    """The SDK's run_job: `{"output": ...}` or `{"error": ...}`."""
    return asyncio.run(rp_job.run_job(handler, payload))


def error_code(sdk_result: dict) -> str:
    assert "error" in sdk_result, sdk_result
    return parse_error(sdk_result["error"])["code"]
