"""Faults inside a job: the engine dying mid-render, the disk filling up, a render outliving its time
limit, the bucket answering 503 or not at all. Each must end as a structured error with nothing left
behind (no job temp dir, no partial output, no half-uploaded object), and the next job must render.
"""

from __future__ import annotations

import base64
import errno
import functools
import os
import time
import urllib.request
import uuid

import pytest
from pydantic import SecretStr

from avatar_engine import storage
from avatar_engine.engines import ENGINES, PreparedRender
from avatar_engine.errors import parse_error
from avatar_engine.media.encode import Mp4Writer
from avatar_engine.serving.worker import run_job
from scripts.make_corpus import CORPUS
from tests.support.gcs import gcs_emulator
from tests.support.gcs import service_account_json as make_service_account_json
from tests.support.media import probe_mp4
from tests.support.proxy import BucketProxy

IMAGE = base64.b64encode((CORPUS / "portrait.jpg").read_bytes()).decode()
AUDIO = base64.b64encode((CORPUS / "speech-0.5s.wav").read_bytes()).decode()
BUCKET = "avatar-faults"


def job(delivery: str = "path", **extra) -> dict:
    output = {"delivery": delivery, "name": "out.mp4"} if delivery == "path" else {"delivery": delivery}
    return {"id": "fault", "input": {"image_b64": IMAGE, "audio_b64": AUDIO, "size": 128, "output": output, **extra}}


def error_of(result: dict) -> dict:
    assert set(result) <= {"error", "refresh_worker"} and isinstance(result["error"], str), result
    return parse_error(result["error"])


def assert_clean(settings) -> None:
    """No job temp dir and no (partial) MP4 in the output dir."""
    assert os.listdir(settings.work_dir) == []
    assert not settings.output_dir.exists() or os.listdir(settings.output_dir) == []


def assert_next_job_renders(settings) -> None:
    result = run_job(job("path"), settings=settings)
    assert "error" not in result, parse_error(result["error"])
    assert probe_mp4(result["video_path"])["frames"] == result["frames"]
    os.unlink(result["video_path"])
    assert_clean(settings)


# --------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------


def _break_frames(monkeypatch, fault):
    """Wrap the real parametric engine so its frame stream hits `fault(i, frame)` for each frame."""
    engine = ENGINES["parametric"]
    real_prepare = engine.prepare

    def prepare(render_job):
        prepared = real_prepare(render_job)

        def frames():
            for i, frame in enumerate(prepared.frames):
                yield fault(i, frame)

        return PreparedRender(frames(), prepared.info)

    monkeypatch.setattr(engine, "prepare", prepare)


def _raise_at(n: int, exc: BaseException):
    def fault(i, frame):
        if i == n:
            raise exc
        return frame

    return fault


@pytest.mark.parametrize("fault, code, message", [
    (_raise_at(4, RuntimeError("CUDA error: an illegal memory access was encountered")), "internal", "RuntimeError"),
    (lambda i, frame: frame[:-2] if i == 3 else frame, "internal", "engine produced a frame"),
    (lambda i, frame: frame.astype("float32") if i == 3 else frame, "internal", "engine produced a frame"),
], ids=["raises", "wrong-shape", "wrong-dtype"])
def test_engine_fault_mid_render_is_internal_and_leaves_nothing(monkeypatch, settings, fault, code, message):
    _break_frames(monkeypatch, fault)
    error = error_of(run_job(job("path"), settings=settings))
    assert error["code"] == code and message in error["message"], error
    assert "illegal memory" not in error["message"]  # engine internals stay in the log
    assert_clean(settings)
    monkeypatch.undo()
    assert_next_job_renders(settings)


def test_engine_stopping_early_is_internal(monkeypatch, settings):
    engine = ENGINES["parametric"]
    real_prepare = engine.prepare

    def prepare(render_job):
        prepared = real_prepare(render_job)
        return PreparedRender(iter([next(prepared.frames)]), prepared.info)

    monkeypatch.setattr(engine, "prepare", prepare)
    error = error_of(run_job(job("path"), settings=settings))
    assert error["code"] == "internal" and "engine stopped after 1 of" in error["message"]
    assert_clean(settings)


def test_engine_out_of_memory_asks_for_a_fresh_worker(monkeypatch, settings):
    _break_frames(monkeypatch, _raise_at(2, MemoryError()))
    result = run_job(job("path"), settings=settings)
    assert result.get("refresh_worker") is True and error_of(result)["code"] == "internal"
    assert_clean(settings)


def test_engine_fault_falls_back_to_the_next_engine(monkeypatch, settings):
    monkeypatch.setattr("avatar_engine.engines.AUTO_ORDER", ("parametric", "still"))
    _break_frames(monkeypatch, _raise_at(4, RuntimeError("kernel died")))
    result = run_job(job("path"), settings=settings)
    assert "error" not in result, parse_error(result["error"])
    assert result["engine"] == "still" and result["fallback_from"][0]["engine"] == "parametric"
    assert probe_mp4(result["video_path"])["frames"] == result["frames"]
    assert os.listdir(settings.work_dir) == [] and os.listdir(settings.output_dir) == ["out.mp4"]


# --------------------------------------------------------------------------------------
# the encoder and the disk
# --------------------------------------------------------------------------------------


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("method", ["write", "close"])
def test_encoder_oserror_is_structured_and_leaves_nothing(monkeypatch, settings, method):
    """Mp4Writer.write/close raising OSError as a full disk would."""
    real = getattr(Mp4Writer, method)
    calls = {"n": 0}

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] >= 3 or method == "close":
            raise _enospc(self.path)
        return real(self, *args)

    monkeypatch.setattr(Mp4Writer, method, failing)
    error = error_of(run_job(job("path"), settings=settings))
    assert error["code"] == "internal" and "OSError" in error["message"], error
    assert_clean(settings)
    monkeypatch.undo()
    assert_next_job_renders(settings)


class _FullDisk:
    """Stands in for the PyAV output container: the muxer's writes fail after `ok_writes`."""

    def __init__(self, container, path, ok_writes: int):
        self._container, self._path, self._left = container, path, ok_writes

    def mux(self, packets):
        if packets and self._left <= 0:
            raise _enospc(self._path)
        self._left -= 1
        self._container.mux(packets)

    def close(self):
        self._container.close()


def _fill_disk_after(monkeypatch, ok_writes: int):
    real_init = Mp4Writer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._container = _FullDisk(self._container, self.path, ok_writes)

    monkeypatch.setattr(Mp4Writer, "__init__", init)


def test_disk_full_inside_the_muxer_is_structured_and_leaves_nothing(monkeypatch, settings):
    _fill_disk_after(monkeypatch, 2)
    error = error_of(run_job(job("path"), settings=settings))
    assert error["code"] == "internal" and "No space left on device" in error["message"], error
    assert_clean(settings)
    monkeypatch.undo()
    assert_next_job_renders(settings)


def test_disk_full_message_does_not_reveal_worker_paths(monkeypatch, settings):
    _fill_disk_after(monkeypatch, 2)
    error = error_of(run_job(job("path"), settings=settings))
    assert str(settings.work_dir) not in error["message"] and "render.mp4" not in error["message"], error


# --------------------------------------------------------------------------------------
# the job time limit
# --------------------------------------------------------------------------------------


def test_job_timeout_stops_a_slow_render(monkeypatch, settings):
    settings = settings.model_copy(update={"job_timeout_s": 0.5})
    _break_frames(monkeypatch, lambda i, frame: time.sleep(0.1) or frame)  # 13 frames: ~1.3 s
    start = time.monotonic()
    error = error_of(run_job(job("path"), settings=settings))
    assert error["code"] == "timeout" and "JOB_TIMEOUT_S" in error["message"], error
    assert time.monotonic() - start < settings.job_timeout_s + 0.5
    assert_clean(settings)
    monkeypatch.undo()
    assert_next_job_renders(settings)


def test_job_timeout_counts_a_slow_prepare_and_skips_the_fallback(monkeypatch, settings):
    """Time spent before the first frame (model set-up, face analysis) counts against the limit,
    and a timed-out job does not start over on the next engine."""
    monkeypatch.setattr("avatar_engine.engines.AUTO_ORDER", ("parametric", "still"))
    settings = settings.model_copy(update={"job_timeout_s": 0.3})
    engine = ENGINES["parametric"]
    real_prepare = engine.prepare
    monkeypatch.setattr(engine, "prepare", lambda render_job: time.sleep(0.5) or real_prepare(render_job))
    error = error_of(run_job(job("path"), settings=settings))
    assert error["code"] == "timeout" and "after 0 of" in error["message"], error
    assert_clean(settings)


# --------------------------------------------------------------------------------------
# the bucket: GCS emulator behind a fault proxy, delivery "url"
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket_proxy():
    with gcs_emulator(BUCKET) as port:
        proxy = BucketProxy(port)
        yield proxy
        proxy.close()


@pytest.fixture(scope="module")
def service_account_json() -> str:
    return make_service_account_json("avatar-faults")


@pytest.fixture
def bucket_settings(settings, bucket_proxy, service_account_json, monkeypatch):
    """Worker settings delivering to the emulator through the proxy, 2 attempts, 1 s timeouts.

    Backoff and the client timeout are not Settings (make_store does not expose them), so the test
    passes them to make_store; everything else is the production path."""
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GCS_CREDENTIALS_JSON", "BUCKET_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", bucket_proxy.url)
    monkeypatch.setattr(storage, "make_store", functools.partial(storage.make_store, backoff_initial=0.05,
                                                                 backoff_max=0.1, timeout=(1.0, 1.0)))
    bucket_proxy.mode, bucket_proxy.uploads = None, 0
    bucket_proxy.release.clear()
    yield settings.model_copy(update={
        "media_bucket": BUCKET, "media_prefix": f"faults-{uuid.uuid4().hex}/", "storage_max_attempts": 2,
        "gcs_credentials_json": SecretStr(service_account_json)})
    bucket_proxy.release.set()


def _objects(settings) -> list[str]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    client = gcs.Client(project="avatar-faults", credentials=AnonymousCredentials())
    return [b.name for b in client.list_blobs(BUCKET, prefix=settings.media_prefix)]


@pytest.mark.parametrize("mode, budget_s", [("503", 5.0), ("stall", 8.0)])
def test_bucket_faults_end_in_upload_failed_with_no_object_left(bucket_settings, bucket_proxy, mode, budget_s):
    bucket_proxy.mode = mode
    start = time.monotonic()
    error = error_of(run_job(job("url"), settings=bucket_settings))
    elapsed = time.monotonic() - start
    assert error["code"] == "upload_failed", error
    assert bucket_proxy.uploads == bucket_settings.storage_max_attempts
    assert elapsed < budget_s
    bucket_proxy.mode = None
    bucket_proxy.release.set()
    assert _objects(bucket_settings) == []  # the emulator kept each attempt; the cleanup removed it
    assert_clean(bucket_settings)

    result = run_job(job("url"), settings=bucket_settings)  # same inputs: no stale cache hit either
    assert "error" not in result, parse_error(result["error"])
    assert result["cached"] is False and result["object_name"].startswith(bucket_settings.media_prefix)
    with urllib.request.urlopen(result["video_url"], timeout=10) as resp:  # noqa: S310 - loopback emulator
        assert probe_mp4(resp.read())["frames"] == result["frames"]
    card = result["object_name"][:-4] + ".result.json"  # what a later cache hit answers with (#22 item 3)
    assert sorted(_objects(bucket_settings)) == sorted([result["object_name"], card])
    assert_clean(bucket_settings)
