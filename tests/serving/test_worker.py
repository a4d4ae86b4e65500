"""The job boundary: every bad input gets its stable code fast, nothing escapes, nothing leaks."""

import base64
import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from avatar_engine.errors import parse_error
from avatar_engine.serving.worker import run_job
from tests.support.media import encode_audio, probe_mp4, tone, wav_bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _err(result: dict) -> dict:
    assert set(result) >= {"error"}, result
    assert isinstance(result["error"], str)  # the SDK keeps only this key, and wants a string
    return parse_error(result["error"])


def _jpeg(png: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def test_valid_job_base64_delivery(settings, portrait_png, short_wav):
    result = run_job({"id": "t1", "input": {"image_b64": b64(portrait_png), "audio_b64": b64(short_wav), "size": 256,
                                            "output": {"delivery": "base64"}}}, settings=settings)
    assert "error" not in result, result
    info = probe_mp4(base64.b64decode(result["video_b64"]))
    assert (info["width"], info["height"], info["frames"]) == (256, 256, result["frames"])
    assert set(result["timings_ms"]) >= {"fetch", "decode", "render", "encode", "deliver", "total"}
    assert result["engine"] == "parametric" and result["encoder"] == "libx264"


def test_valid_job_from_urls(settings, hostile, tmp_path):
    result = run_job({"id": "t2", "input": {"image_url": hostile.url("/image.png"),
                                            "audio_url": hostile.url("/image.jpg.wav"),  # extension lies: sniffed
                                            "size": 256, "output": {"delivery": "path", "name": "u.mp4"}}},
                     settings=settings)
    assert "error" not in result, result
    assert result["video_path"] == str((settings.output_dir / "u.mp4").resolve())
    assert probe_mp4(result["video_path"])["frames"] == result["frames"]


def _bad_cases(hostile, portrait_png, speech_wav):
    jpeg = _jpeg(portrait_png)
    mp3 = encode_audio(tone(1.0, 22050), 22050, "mp3", "libmp3lame")
    img, aud = b64(portrait_png), b64(speech_wav)
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")
    return {
        "unknown field": ({"image_b64": img, "audio_b64": aud, "colour": 1}, "invalid_input"),
        "wrong type": ({"image_b64": img, "audio_b64": aud, "fps": "fast"}, "invalid_input"),
        "negative fps": ({"image_b64": img, "audio_b64": aud, "fps": -5}, "invalid_input"),
        "huge size": ({"image_b64": img, "audio_b64": aud, "size": 10 ** 9}, "invalid_input"),
        "no audio": ({"image_b64": img}, "invalid_input"),
        "not base64": ({"image_b64": "%%%%", "audio_b64": aud}, "invalid_input"),
        "text as image": ({"image_b64": b64(b"hello, I am text"), "audio_b64": aud}, "unsupported_media"),
        "empty png": ({"image_b64": b64(b"\x89PNG\r\n\x1a\n"), "audio_b64": aud}, "unsupported_media"),
        "truncated png": ({"image_b64": b64(portrait_png[:3000]), "audio_b64": aud}, "unsupported_media"),
        "truncated jpeg": ({"image_b64": b64(jpeg[:2000]), "audio_b64": aud}, "unsupported_media"),
        "bomb": ({"image_b64": b64(bomb.getvalue()), "audio_b64": aud}, "input_too_large"),
        "tiny image": ({"image_b64": b64(_tiny_png()), "audio_b64": aud}, "invalid_input"),
        "empty wav": ({"image_b64": img, "audio_b64": b64(wav_bytes(np.zeros((1, 0), np.float32), 16000))},
                      ("invalid_input", "unsupported_media")),
        "truncated wav header": ({"image_b64": img, "audio_b64": b64(speech_wav[:30])}, "unsupported_media"),
        "corrupt mp3": ({"image_b64": img, "audio_b64": b64(mp3[:10] + bytes(200))}, ("unsupported_media", "invalid_input")),
        "0.1 s audio": ({"image_b64": img, "audio_b64": b64(wav_bytes(tone(0.1), 16000))}, "invalid_input"),
        "png as audio": ({"image_b64": img, "audio_b64": img}, "unsupported_media"),
        "404": ({"image_url": hostile.url("/missing.png"), "audio_b64": aud}, "fetch_failed"),
        "500": ({"image_url": hostile.url("/500"), "audio_b64": aud}, "fetch_failed"),
        "redirect loop": ({"image_url": hostile.url("/loop"), "audio_b64": aud}, "fetch_failed"),
        "to metadata": ({"image_url": hostile.url("/to-metadata"), "audio_b64": aud}, "fetch_failed"),
        "to private": ({"image_url": hostile.url("/to-private"), "audio_b64": aud}, "fetch_failed"),
        "file url": ({"image_url": "file:///etc/passwd", "audio_b64": aud}, "invalid_input"),
        "gs url": ({"image_url": "gs://bucket/x.png", "audio_b64": aud}, "invalid_input"),
        "html page": ({"image_url": hostile.url("/html"), "audio_b64": aud}, "unsupported_media"),
        "wrong length": ({"image_url": hostile.url("/short-body"), "audio_b64": aud}, "fetch_failed"),
        "endless body": ({"image_b64": img, "audio_url": hostile.url("/endless")}, "input_too_large"),
        "unknown engine": ({"image_b64": img, "audio_b64": aud, "engine": "wav2lip"}, "engine_unavailable"),
    }


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_table(settings, hostile, portrait_png, speech_wav):
    settings = settings.model_copy(update={"max_audio_bytes": 2_000_000})
    for name, (payload, codes) in _bad_cases(hostile, portrait_png, speech_wav).items():
        start = time.monotonic()
        error = _err(run_job({"id": name, "input": payload}, settings=settings))
        elapsed = time.monotonic() - start
        codes = codes if isinstance(codes, tuple) else (codes,)
        assert error["code"] in codes, (name, error)
        assert error["message"] and "Traceback" not in error["message"], (name, error)
        assert elapsed < 2.0, (name, elapsed)
    assert os.listdir(settings.work_dir) == []  # no job temp dir left behind


def test_slow_server_answered_within_fetch_timeout(settings, hostile, speech_wav):
    start = time.monotonic()
    error = _err(run_job({"input": {"image_url": hostile.url("/drip"), "audio_b64": b64(speech_wav)}}, settings=settings))
    assert error["code"] == "fetch_failed"
    assert time.monotonic() - start < settings.fetch_total_timeout_s + settings.fetch_read_timeout_s + 0.5


@pytest.mark.parametrize("job", [None, "x", {"id": "no-input"}, {"input": None}, {"input": []}])
def test_malformed_jobs(job):
    assert _err(run_job(job))["code"] == "invalid_input"


def test_internal_errors_hide_the_traceback(monkeypatch, settings, portrait_png, short_wav):
    def boom(*a, **k):
        raise RuntimeError("secret internals /root/key.json")

    monkeypatch.setattr("avatar_engine.serving.worker.render", boom)
    error = _err(run_job({"input": {"image_b64": b64(portrait_png), "audio_b64": b64(short_wav)}}, settings=settings))
    assert error == {"code": "internal", "message": "internal error (RuntimeError); the job was not rendered"}


def test_engine_failure_falls_back(monkeypatch, settings, portrait_png, short_wav):
    """A neural engine crashing mid-render falls back to the next engine; the result says so."""
    from avatar_engine.engines import ENGINES, PreparedRender
    from avatar_engine.engines.base import Engine, EngineStatus

    class Flaky(Engine):
        name = "flaky"

        def status(self, settings):
            return EngineStatus(True)

        def prepare(self, job):
            def frames():
                yield job.image
                raise RuntimeError("CUDA error: device-side assert")

            return PreparedRender(frames())

    monkeypatch.setitem(ENGINES, "flaky", Flaky())
    monkeypatch.setattr("avatar_engine.engines.AUTO_ORDER", ("flaky", "parametric"))
    result = run_job({"input": {"image_b64": b64(portrait_png), "audio_b64": b64(short_wav), "size": 256,
                                "output": {"delivery": "base64"}}}, settings=settings)
    assert result["engine"] == "parametric"
    assert result["fallback_from"][0]["engine"] == "flaky"
    assert result["refresh_worker"] is True  # a CUDA error leaves the process suspect: recycle it
    assert os.listdir(settings.work_dir) == []


def test_delivery_auto_without_bucket_is_base64_and_capped(settings, portrait_png, short_wav):
    small = settings.model_copy(update={"max_base64_bytes": 1000})
    error = _err(run_job({"input": {"image_b64": b64(portrait_png), "audio_b64": b64(short_wav), "size": 256}},
                         settings=small))
    assert error["code"] == "input_too_large" and "MEDIA_BUCKET" in error["message"]
    error = _err(run_job({"input": {"image_b64": b64(portrait_png), "audio_b64": b64(short_wav),
                                    "output": {"delivery": "url"}}}, settings=settings))
    assert error["code"] == "invalid_input" and "MEDIA_BUCKET" in error["message"]


def test_error_payload_is_json_with_code_and_message():
    from avatar_engine.errors import AvatarError
    from avatar_engine.serving.worker import error_result

    out = error_result(AvatarError("no_face", "no face"))
    assert json.loads(out["error"]) == {"code": "no_face", "message": "no face"}
    assert parse_error(out["error"]) == {"code": "no_face", "message": "no face"}
    assert parse_error("plain text")["code"] == "internal"


def test_job_timeout(settings, portrait_png, speech_wav):
    """A render past JOB_TIMEOUT_S is abandoned with code `timeout`, leaving nothing behind."""
    quick = settings.model_copy(update={"job_timeout_s": 0.05})
    error = _err(run_job({"input": {"image_b64": b64(portrait_png), "audio_b64": b64(speech_wav)}}, settings=quick))
    assert error["code"] == "timeout" and "JOB_TIMEOUT_S" in error["message"]
    assert os.listdir(settings.work_dir) == []


def test_cli_renders_local_files(tmp_path, capsys):
    from avatar_engine.cli import main
    from tests.support.media import ASSETS

    out = tmp_path / "cli.mp4"
    code = main(["render", "--face", str(ASSETS / "astronaut_512.png"), "--audio", str(ASSETS / "short_16k.wav"),
                 "--out", str(out), "--size", "256", "--lipsync", "signal"])
    assert code == 0 and json.loads(capsys.readouterr().out)["video_path"] == str(out.resolve())
    assert probe_mp4(out)["frames"] == 53
    assert main(["render", "--face", str(tmp_path / "missing.png"), "--audio", str(out), "--out", str(out)]) == 2


def test_cli_text_and_argument_errors(tmp_path, capsys):
    from avatar_engine.cli import main
    from tests.support.media import ASSETS

    out = tmp_path / "text.mp4"
    face = str(ASSETS / "astronaut_512.png")
    code = main(["render", "--face", face, "--text", "Hallo zusammen.", "--language", "de", "--captions", "srt",
                 "--out", str(out), "--size", "256", "--engine", "parametric"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["lipsync"] == "synthesizer" and "Hallo zusammen." in result["captions"]
    assert main(["render", "--face", face, "--out", str(out)]) == 2  # neither --audio nor --text
    assert main(["render", "--face", face, "--text", "x", "--reference-video", face, "--engine", "wav2lip",
                 "--out", str(out)]) == 2


def test_progress_goes_to_runpod_only_on_runpod(monkeypatch):
    from avatar_engine.serving import worker

    sent = []
    monkeypatch.setattr("runpod.serverless.progress_update", lambda job, msg: sent.append(msg))
    worker._progress_reporter({"id": "local"})("render", 0.5)
    assert sent == []
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://api.runpod.invalid/job")
    report = worker._progress_reporter({"id": "j1"})
    report("fetch", 0.0)
    report("render", 0.5)
    report("done", 1.0)
    assert sent == ["fetch 0%", "render 50%", "done 100%"]


def test_embedded_render_never_imports_torch(tmp_path):
    """A worker without checkpoints renders without loading torch (cold start and memory stay small)."""
    import subprocess
    import sys

    from tests.support.localapi import worker_env
    from tests.support.media import REPO

    code = ("import sys, json; import handler; from avatar_engine.serving.worker import run_job; "
            "job = json.load(open('test_input.json')); job['input']['output'] = {'delivery': 'base64'}; "
            "r = run_job(job); assert 'error' not in r, r; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=worker_env(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
