"""Bucket delivery end to end: upload, signed URL, content-addressed cache, against a GCS emulator."""

import base64
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from avatar_engine.engines import ENGINES
from avatar_engine.serving.worker import run_job
from tests.support.gcs import gcs_emulator, service_account_json
from tests.support.media import REPO, probe_mp4

BUCKET = "avatar-delivery-test"


@pytest.fixture(scope="module")
def key_json() -> str:
    return service_account_json("avatar-test")


@pytest.fixture(scope="module")
def emulator():
    with gcs_emulator(BUCKET) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def bucket_settings(settings, emulator, key_json, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    return settings.model_copy(update={"media_bucket": BUCKET, "gcs_credentials_json": base64.b64encode(key_json.encode()).decode(),
                                       "gcs_signed_url_ttl": 3600})


def _job(portrait_png, short_wav, **extra):
    return {"input": {"image_b64": base64.b64encode(portrait_png).decode(),
                      "audio_b64": base64.b64encode(short_wav).decode(), "size": 256, **extra}}


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_url_delivery_then_cache_hit(bucket_settings, portrait_png, short_wav, monkeypatch, caplog, key_json):
    caplog.set_level(logging.DEBUG)
    first = run_job(_job(portrait_png, short_wav, seed=11), settings=bucket_settings)
    assert "error" not in first, first
    assert first["cached"] is False and first["video_url"].startswith("http://127.0.0.1")
    assert "X-Goog-Signature=" in first["video_url"] and first["expires_at"].endswith("Z")
    mp4 = _download(first["video_url"])
    assert probe_mp4(mp4)["frames"] == first["frames"]

    def must_not_render(job):
        raise AssertionError("a cached request must not render")

    monkeypatch.setattr(ENGINES["parametric"], "prepare", must_not_render)
    start = time.monotonic()
    second = run_job(_job(portrait_png, short_wav, seed=11), settings=bucket_settings)
    assert time.monotonic() - start < 1.0
    assert second["cached"] is True and second["object_name"] == first["object_name"]
    assert _download(second["video_url"]) == mp4

    forced = run_job(_job(portrait_png, short_wav, seed=11, cache=False), settings=bucket_settings)
    assert parse_code(forced) == "internal"  # cache: false really renders (and hit our tripwire)

    private = json.loads(key_json)["private_key"].splitlines()[5]
    text = json.dumps([first, second]) + caplog.text
    assert private not in text and base64.b64encode(key_json.encode()).decode()[:40] not in text


def parse_code(result):
    from avatar_engine.errors import parse_error

    return parse_error(result["error"])["code"] if "error" in result else None


def test_other_options_are_other_objects(bucket_settings, portrait_png, short_wav):
    a = run_job(_job(portrait_png, short_wav, seed=1), settings=bucket_settings)
    b = run_job(_job(portrait_png, short_wav, seed=2), settings=bucket_settings)
    assert a["object_name"] != b["object_name"]
    assert bucket_settings.media_prefix and a["object_name"].startswith(bucket_settings.media_prefix)


@pytest.mark.slow
def test_handler_returns_a_video_url(tmp_path, emulator, key_json, portrait_png, short_wav):
    (tmp_path / "test_input.json").write_text(json.dumps(_job(portrait_png, short_wav, seed=99)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_"))}
    env.update(MEDIA_BUCKET=BUCKET, STORAGE_EMULATOR_HOST=emulator, GCS_CREDENTIALS_JSON=key_json,
               MODEL_ROOT=str(tmp_path / "models"), PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(REPO / "handler.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(l for l in (proc.stdout + proc.stderr).splitlines() if "Job result" in l and "video_url" in l)
    url = line.split("'video_url': '")[1].split("'")[0]
    assert probe_mp4(_download(url))["frames"] > 0
    assert key_json.splitlines()[0][:30] not in proc.stdout + proc.stderr
