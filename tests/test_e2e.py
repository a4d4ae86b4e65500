"""The worker as users run it: `python handler.py` on a test_input.json, and the SDK's local API server."""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from avatar_engine.errors import parse_error
from tests.support.localapi import local_api_server
from tests.support.localapi import worker_env as _env
from tests.support.media import REPO, probe_mp4

pytestmark = pytest.mark.slow


def _job_input(portrait_png, short_wav, **extra) -> dict:
    return {"image_b64": base64.b64encode(portrait_png).decode(), "audio_b64": base64.b64encode(short_wav).decode(),
            "size": 256, **extra}


def _check_mp4(source, frames: int, size=(256, 256)):
    info = probe_mp4(source)
    assert (info["video_codec"], info["pix_fmt"], info["audio_codec"]) == ("h264", "yuv420p", "aac")
    assert (info["width"], info["height"]) == size and info["frames"] == frames
    assert info["boxes"].index("moov") < info["boxes"].index("mdat")
    assert abs(info["video_duration"] - info["audio_duration"]) <= 1 / info["fps"] + 0.03


def test_handler_test_input(tmp_path, portrait_png, short_wav):
    job = {"input": _job_input(portrait_png, short_wav, output={"delivery": "path", "name": "e2e.mp4"})}
    # the SDK reads ./test_input.json (a base64 job is too long for a --test_input argument)
    (tmp_path / "test_input.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, str(REPO / "handler.py")], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out" / "e2e.mp4"
    _check_mp4(out, frames=53)  # ceil(2.107 s x 25)
    assert not [n for n in os.listdir(tmp_path / "tmp") if n.startswith("avatar-job-")]


def _post(url: str, body: dict | None, timeout: float = 120) -> tuple[int, dict]:
    """One POST on a fresh connection (urllib sends `Connection: close`; nothing is reused).

    `body=None` sends no body at all (`Content-Length: 0`). Use it for /status and /stream: the SDK's
    simulator runs the job inside those handlers and never reads the request body. http.client sends
    headers and body in two writes, so on a busy machine the body can reach the server after the headers
    were parsed (a synchronous handler then holds the event loop for the whole render) or after the
    response was sent; when uvicorn closes the connection with those bytes unread (or they hit the closed
    socket), the kernel answers with a TCP RST that discards the response still in flight
    (ConnectionResetError, issue #11). With no body there is nothing to leave unread.
    """
    data = b"" if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    with local_api_server(tmp) as api:
        yield api.base, tmp


def test_runsync_renders(api_server, portrait_png, short_wav):
    base, tmp = api_server
    job = {"input": _job_input(portrait_png, short_wav, output={"delivery": "base64"})}
    status, body = _post(base + "/runsync", job, timeout=600)  # the render runs inside this request
    assert status == 200 and body["status"] == "COMPLETED", body
    out = body["output"]
    _check_mp4(base64.b64decode(out["video_b64"]), frames=out["frames"])
    assert out["engine"] == "parametric"
    assert not [n for n in os.listdir(tmp / "tmp") if n.startswith("avatar-job-")]


@pytest.mark.parametrize("payload, code", [
    ({"image_b64": "aGk=", "audio_b64": "aGk=", "bogus": 1}, "invalid_input"),
    ({"image_url": "http://169.254.169.254/latest/meta-data/", "audio_b64": "aGk="}, "fetch_failed"),
    ({"image_b64": base64.b64encode(b"not an image").decode(), "audio_b64": "aGk="}, "unsupported_media"),
])
def test_runsync_error_codes_survive(api_server, payload, code):
    base, _ = api_server
    status, body = _post(base + "/runsync", {"input": payload})
    assert status == 200 and body["status"] == "FAILED", body
    error = parse_error(body["error"])
    assert error["code"] == code and error["message"]


def test_run_then_status(api_server, portrait_png, short_wav):
    """What the SDK's local simulator does (runpod 1.12), and so what a local client may expect from it.

    `/run` only stashes the job (IN_PROGRESS, nothing rendered); the first `/status/{id}` renders it inside
    that request and answers COMPLETED with the output (never IN_PROGRESS), so its read timeout must cover a
    whole render; afterwards the id is forgotten. `/stream/{id}` needs a generator handler: ours is not one.
    """
    base, _ = api_server
    status, body = _post(base + "/run", {"input": _job_input(portrait_png, short_wav, output={"delivery": "base64"})})
    assert status == 200 and body.get("id") and body["status"] == "IN_PROGRESS", body
    job_id = body["id"]
    status, body = _post(base + f"/stream/{job_id}", None)
    assert body["status"] == "FAILED" and "generator" in body["error"], body  # the job stays stashed
    status, body = _post(base + f"/status/{job_id}", None, timeout=600)
    assert status == 200 and body["status"] == "COMPLETED" and body["output"]["frames"] > 0, body
    _check_mp4(base64.b64decode(body["output"]["video_b64"]), frames=body["output"]["frames"])
    status, body = _post(base + f"/status/{job_id}", None)
    assert body["status"] == "FAILED" and "not found" in body["error"], body


def test_status_survives_a_busy_client(api_server, portrait_png, short_wav):
    """Several /run + /status rounds back to back: each /status, sent without a body, gets its whole output."""
    base, _ = api_server
    for _ in range(3):
        _, body = _post(base + "/run", {"input": _job_input(portrait_png, short_wav, output={"delivery": "base64"})})
        status, body = _post(base + f"/status/{body['id']}", None, timeout=600)
        assert status == 200 and body["status"] == "COMPLETED", body
        assert len(base64.b64decode(body["output"]["video_b64"])) == body["output"]["video_bytes"]
