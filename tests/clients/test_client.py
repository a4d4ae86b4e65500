"""The endpoint client against both API shapes: the SDK's real local server running handler.py, and a
loopback fake of the hosted /v2 API (routes, retries, key, cancel, stream)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from avatar_engine.clients.endpoint import AvatarClient, ClientConfig, EndpointError, JobFailed, JobNotFound
from avatar_engine.clients.providers import get_provider
from avatar_engine.errors import AvatarError
from tests.clients.fake_hosted import FakeHosted
from tests.support.http import HostileServer
from tests.support.media import probe_mp4


@pytest.fixture
def local(local_api) -> AvatarClient:
    return AvatarClient(ClientConfig(base_url=local_api))


@pytest.fixture
def hosted():
    fake = FakeHosted()
    yield fake
    fake.close()


def _hosted_client(fake: FakeHosted, monkeypatch, **config) -> AvatarClient:
    monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
    monkeypatch.setenv("AVATAR_ENDPOINT_ID", fake.endpoint_id)
    monkeypatch.delenv("AVATAR_SERVICE_BASEURL", raising=False)
    monkeypatch.delenv("AVATAR_SERVICE_API", raising=False)
    return AvatarClient.from_env(endpoint_url_base=fake.base, poll_initial_s=0.01, poll_max_s=0.02,
                                 backoff_initial_s=0.01, **config)


# -- the SDK's local server, our handler -------------------------------------------------


def test_local_shape_is_detected(local):
    assert local.shape == "local"


def test_local_single_job(local, quick_input):
    status = local.run_sync(quick_input, timeout_s=120)
    assert status.ok and status.id
    result = status.result()
    assert result.engine == "parametric" and result.frames == 53 and result.timings_ms["total"] > 0
    info = probe_mp4(base64.b64decode(result.video_b64))
    assert (info["video_codec"], info["width"], info["frames"]) == ("h264", 256, 53)


def test_local_text_job(local, quick_input):
    spoken = {k: v for k, v in quick_input.items() if not k.startswith("audio")} | {"text": "Hi there.",
                                                                                    "captions": "srt"}
    result = local.run_sync(spoken, timeout_s=120).result()
    assert result.lipsync == "synthesizer" and "Hi there." in result.model_extra["captions"]


def test_local_run_then_status_polling(local, quick_input):
    job = local.run(quick_input)
    assert job.id and not job.done
    seen = []
    final = local.wait(job.id, timeout_s=120, on_status=seen.append)
    assert final.ok and final.result().frames == 53 and [s.status for s in seen][-1] == "COMPLETED"
    # the local server ran the job inside that /status call and forgot it
    with pytest.raises(JobNotFound):
        local.status(job.id)


def test_local_failing_job_keeps_its_code(local, quick_input):
    bad = {**quick_input, "image_b64": base64.b64encode(b"not an image").decode()}
    final = local.wait(local.run(bad).id, timeout_s=60)
    assert final.status == "FAILED" and final.error["code"] == "unsupported_media" and final.error["message"]
    with pytest.raises(JobFailed) as caught:
        local.render(bad, timeout_s=60)
    assert caught.value.code == "unsupported_media" and caught.value.job_id
    status = local.run_sync({**quick_input, "bogus": 1})
    assert status.status == "FAILED" and status.error["code"] == "invalid_input"


def test_local_stream_and_cancel(local, quick_input):
    chunks = list(local.stream(local.run({**quick_input, "size": 128}).id, timeout_s=120))
    assert len(chunks) == 1 and chunks[0]["frames"] == 53  # a non-generator handler: one final chunk
    with pytest.raises(EndpointError, match="no /cancel"):
        local.cancel("any")


def test_local_health_and_action(local):
    assert local.health()["engines"]["parametric"]["available"] is True
    assert [a["id"] for a in local.action("list_avatars")["avatars"]] == ["alice"]


def test_provider_switch_default_is_this_endpoint(local_api, monkeypatch, portrait_png, short_wav):
    monkeypatch.delenv("AVATAR_PROVIDER", raising=False)
    monkeypatch.setenv("AVATAR_SERVICE_BASEURL", local_api)
    monkeypatch.delenv("AVATAR_ENDPOINT_ID", raising=False)
    provider = get_provider()
    assert provider.name == "sadtalker"
    files = HostileServer({"/p.png": portrait_png, "/a.wav": short_wav})
    try:
        # no bucket on the local server: path delivery on this machine comes back as a file:// URL
        url = provider.render(files.url("/p.png"), files.url("/a.wav"), engine="parametric", size=128,
                              output={"delivery": "path"})
    finally:
        files.close()
    assert url.startswith("file://")
    assert probe_mp4(Path(urlparse(url).path))["frames"] == 53
    with pytest.raises(JobFailed) as caught:  # the link-local range stays closed: the code survives the switch
        provider.render("http://169.254.169.254/p.png", "http://169.254.169.254/a.wav")
    assert caught.value.code == "fetch_failed"


# -- the hosted shape ----------------------------------------------------------------------


def test_hosted_run_status_polling_and_key(hosted, monkeypatch):
    client = _hosted_client(hosted, monkeypatch)
    assert client.shape == "hosted" and client.root.endswith("/v2/ep123")
    job = client.run({"image_url": "https://x/p.png", "audio_url": "https://x/a.wav"})
    assert job.status == "IN_QUEUE"
    seen = []
    final = client.wait(job.id, timeout_s=10, on_status=lambda s: seen.append(s.status))
    assert seen == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    result = final.result()
    assert result.video_url == "https://cdn.example/v.mp4" and final.execution_ms == 700
    assert ("GET", f"/v2/ep123/status/{job.id}") in hosted.calls
    assert hosted.jobs[job.id]["input"]["image_url"] == "https://x/p.png"


def test_hosted_retries_429_and_5xx(hosted, monkeypatch):
    client = _hosted_client(hosted, monkeypatch)
    hosted.fail_next = [(429, {"Retry-After": "0"}), (503, {}), (502, {})]
    t0 = time.monotonic()
    job = client.run({"image_url": "https://x/p.png", "audio_url": "https://x/a.wav"})
    assert job.id and time.monotonic() - t0 < 5
    assert [c for c in hosted.calls if c[1].endswith("/run")].__len__() == 4
    hosted.fail_next = [(500, {})] * 10
    with pytest.raises(EndpointError) as caught:
        client.status(job.id)
    assert caught.value.http_status == 500


def test_hosted_errors_timeout_cancel_stream(hosted, monkeypatch):
    client = _hosted_client(hosted, monkeypatch)
    hosted.error = '{"code": "no_face", "message": "no face was found"}'
    with pytest.raises(JobFailed) as caught:
        client.render({"image_url": "https://x/p.png", "audio_url": "https://x/a.wav"}, timeout_s=10)
    assert caught.value.code == "no_face"
    assert client.run_sync({"image_url": "u", "audio_url": "u"}).error == {"code": "no_face",
                                                                            "message": "no face was found"}
    hosted.error = None
    hosted.states = ["IN_QUEUE"]  # never finishes
    job = client.run({"image_url": "u", "audio_url": "u"})
    with pytest.raises(JobFailed) as caught:
        client.wait(job.id, timeout_s=0.2)
    assert caught.value.code == "timeout"
    assert client.cancel(job.id).status == "CANCELLED"
    assert client.status(job.id).failure().message == "the job was cancelled"
    assert list(client.stream(client.run({"image_url": "u", "audio_url": "u"}).id)) == [{"part": 1}, {"part": 2}]
    with pytest.raises(JobNotFound):
        client.status("job-404")
    assert client.health()["workers"]["idle"] == 1


def test_hosted_needs_a_key(hosted, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(ValueError, match="RUNPOD_API_KEY"):
        AvatarClient(ClientConfig(endpoint_id="ep123"))
    client = AvatarClient(ClientConfig(endpoint_id="ep123", api_key="wrong", endpoint_url_base=hosted.base))
    with pytest.raises(EndpointError) as caught:
        client.run({"image_url": "u", "audio_url": "u"})
    assert caught.value.http_status == 401


def test_hosted_shape_through_a_base_url(hosted, monkeypatch):
    client = AvatarClient(ClientConfig(base_url=f"{hosted.base}/ep123", api_key=hosted.api_key))
    assert client.shape == "hosted"  # no local-server OpenAPI document there
    assert client.run_sync({"image_url": "u", "audio_url": "u"}).ok


def test_did_provider_needs_its_key(monkeypatch):
    monkeypatch.setenv("AVATAR_PROVIDER", "d-id")
    monkeypatch.delenv("DID_API_KEY", raising=False)
    with pytest.raises(AvatarError, match="DID_API_KEY") as caught:
        get_provider()
    assert caught.value.code == "engine_unavailable"
    with pytest.raises(ValueError, match="unknown AVATAR_PROVIDER"):
        get_provider("heygen")
