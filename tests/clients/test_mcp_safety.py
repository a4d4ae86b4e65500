"""The MCP server as a hostile or careless client meets it, in process (the SDK's own client, no
subprocess): arguments checked against the request model with REST error codes, local files only under
MCP_FILE_ROOTS and sized before reading, off the event loop, renders through the worker boundary,
cancel stops the render and leaves no MP4, the link readable through resources/read or as base64."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

import avatar_engine
from avatar_engine import mcp_server
from avatar_engine.schema import RenderRequest
from avatar_engine.serving import worker
from avatar_engine.serving.deadline import JobCancelled
from avatar_engine.settings import Settings
from tests.support.media import ASSETS

MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    return root


@pytest.fixture
def settings(tmp_path, roots, monkeypatch) -> Settings:
    for name in ("AVATAR_SERVICE_BASEURL", "AVATAR_ENDPOINT_ID"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(output_dir=tmp_path / "out", model_root=tmp_path / "models", media_bucket=None,
                 mcp_file_roots=str(roots), job_timeout_s=30)
    monkeypatch.setattr(mcp_server, "get_settings", lambda: s)
    return s


@pytest.fixture
def fake_render(monkeypatch, settings):
    """worker.run_job's render step replaced: records calls, writes what delivery asks for."""
    calls = []

    def render(request, *, settings, progress, deadline, emit):
        calls.append({"request": request, "thread": threading.current_thread().name, "deadline": deadline})
        progress("render", 0.5)
        if request.output.delivery == "base64":
            return {"video_b64": base64.b64encode(MP4).decode(), "frames": 1}
        target = Path(settings.output_dir) / f"{len(calls)}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(MP4)
        return {"video_path": str(target), "video_bytes": len(MP4), "frames": 1}

    monkeypatch.setattr(worker, "render", render)
    return calls


def _session(coro_fn):
    async def run():
        async with Client(mcp_server.server, mode="legacy") as client:
            return await coro_fn(client)
    return anyio.run(run)


def _code(result) -> dict:
    assert result.is_error, result.content
    return json.loads(result.content[0].text)


def test_arguments_are_the_request_models(settings, fake_render):
    async def go(client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        unknown = await client.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi", "bogus": 1})
        too_big = await client.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi", "size": 5000,
                                                           "seed": 2**40})
        extra_on_health = await client.call_tool("health", {"verbose": True})
        return client.server_info, tools, unknown, too_big, extra_on_health

    info, tools, unknown, too_big, extra = _session(go)
    assert info.version == avatar_engine.__version__
    props = tools["render_avatar"].input_schema["properties"]
    model = RenderRequest.model_json_schema()["properties"]
    for name in mcp_server.PASSTHROUGH:
        for rule in ("maximum", "minimum", "enum", "maxLength", "minLength", "pattern", "description", "default"):
            assert props[name].get(rule) == model[name].get(rule) or any(
                v.get(rule) == props[name].get(rule) for v in props[name].get("anyOf", [])), (name, rule)
    assert props["seed"]["maximum"] == 2**31 - 1 and props["size"]["maximum"] == 1024
    assert _code(unknown) == {"code": "invalid_input", "message": "unknown field 'bogus'"}
    body = _code(too_big)
    assert body["code"] == "invalid_input" and "size" in body["message"] and "seed" in body["message"]
    assert _code(extra)["code"] == "invalid_input"
    assert fake_render == []


def test_local_files_only_under_the_roots(settings, fake_render, roots, tmp_path):
    outside = tmp_path / "secret.wav"
    outside.write_bytes((ASSETS / "short_16k.wav").read_bytes())
    (roots / "escape.wav").symlink_to(outside)
    (roots / "voice.wav").write_bytes((ASSETS / "short_16k.wav").read_bytes())
    with open(roots / "huge.wav", "wb") as f:  # 1 GB sparse: refused by its size, never read
        f.truncate(1 << 30)

    async def go(client):
        out = {}
        for name, audio in {"outside": str(outside), "symlink": str(roots / "escape.wav"),
                            "environ": "/proc/self/environ", "zero": "/dev/zero", "huge": str(roots / "huge.wav"),
                            "ok": f"file://{roots / 'voice.wav'}"}.items():
            t0 = time.perf_counter()
            out[name] = (await client.call_tool("render_avatar", {"avatar_id": "alice", "audio": audio}),
                         time.perf_counter() - t0)
        return out

    results = _session(go)
    for name in ("outside", "symlink", "environ", "zero"):
        body = _code(results[name][0])
        assert body["code"] == "invalid_input" and "MCP_FILE_ROOTS" in body["message"], (name, body)
    huge, seconds = results["huge"]
    assert _code(huge)["code"] == "input_too_large" and seconds < 2
    assert not results["ok"][0].is_error, results["ok"][0].content
    [call] = fake_render
    assert base64.b64decode(call["request"].audio_b64) == (ASSETS / "short_16k.wav").read_bytes()
    assert call["thread"] != threading.current_thread().name  # rendered (and read) off the event loop


def test_no_root_reads_nothing_and_special_files_are_refused(settings, fake_render, monkeypatch):
    monkeypatch.setattr(settings, "mcp_file_roots", "/dev" + os.pathsep + "/")  # '/' is never a root
    assert [str(p) for p in mcp_server.file_roots(settings)] == ["/dev"]
    with pytest.raises(avatar_engine.errors.AvatarError, match="not a regular file"):
        mcp_server.read_local_file("/dev/zero", "audio", settings)
    monkeypatch.setattr(settings, "mcp_file_roots", "")
    assert mcp_server.file_roots(settings) == []
    with pytest.raises(avatar_engine.errors.AvatarError, match="MCP_FILE_ROOTS"):
        mcp_server.read_local_file(str(ASSETS / "short_16k.wav"), "audio", settings)


def test_renders_pass_the_worker_boundary(settings, monkeypatch):
    def out_of_memory(request, **_):
        raise MemoryError

    monkeypatch.setattr(worker, "render", out_of_memory)
    result = _session(lambda c: c.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi"}))
    assert _code(result) == {"code": "internal", "message": "the worker ran out of memory on this job"}

    monkeypatch.setattr(worker, "render", lambda request, **_: 1 / 0)
    body = _code(_session(lambda c: c.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi"})))
    assert body["code"] == "internal" and "ZeroDivisionError" in body["message"]


def test_the_link_is_readable_and_base64_on_request(settings, fake_render):
    async def go(client):
        linked = await client.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi"})
        link = next(c for c in linked.content if c.type == "resource_link")
        read = await client.read_resource(link.uri)
        inline = await client.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi", "return_base64": True})
        refused = None
        try:
            await client.read_resource("file:///etc/passwd")
        except Exception as exc:  # noqa: BLE001 - the SDK raises its MCPError
            refused = exc
        return link, read, inline, refused

    link, read, inline, refused = _session(go)
    assert link.uri.startswith("file://") and base64.b64decode(read.contents[0].blob) == MP4
    assert read.contents[0].mime_type == "video/mp4"
    embedded = next(c for c in inline.content if c.type == "resource")
    assert base64.b64decode(embedded.resource.blob) == MP4
    assert fake_render[-1]["request"].output.delivery == "base64"
    assert refused is not None and "not a render of this server" in str(refused)


def test_cancel_stops_the_render_and_leaves_no_mp4(settings, monkeypatch):
    stopped = threading.Event()

    def slow(request, *, settings, progress, deadline, emit):  # delivers, then is still busy when cancelled
        target = Path(settings.output_dir) / "late.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(MP4)
        try:
            for _ in range(400):
                deadline.check("render")
                time.sleep(0.01)
        except JobCancelled:
            stopped.set()
            target.unlink()  # the pipeline removes what it made on a cancel
            raise
        return {"video_path": str(target), "frames": 1}

    monkeypatch.setattr(worker, "render", slow)

    async def go(client):
        with anyio.move_on_after(0.5):
            await client.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi"})
        await anyio.sleep(0.3)

    t0 = time.perf_counter()
    _session(go)
    assert stopped.wait(2) and time.perf_counter() - t0 < 3
    assert list(Path(settings.output_dir).glob("*.mp4")) == []

    def finished(request, *, settings, progress, deadline, emit):  # done, but the caller has gone meanwhile
        target = Path(settings.output_dir) / "done.mp4"
        target.write_bytes(MP4)
        time.sleep(0.6)
        return {"video_path": str(target), "frames": 1}

    monkeypatch.setattr(worker, "render", finished)
    _session(go)
    assert list(Path(settings.output_dir).glob("*.mp4")) == []


def test_a_failure_outside_the_render_is_still_a_code(settings, fake_render, monkeypatch):
    def broken(result, settings):
        raise RuntimeError("/secret/path")

    monkeypatch.setattr(mcp_server, "_keep_video", broken)
    body = _code(_session(lambda c: c.call_tool("render_avatar", {"avatar_id": "alice", "text": "hi"})))
    assert body["code"] == "internal" and "RuntimeError" in body["message"] and "/secret" not in body["message"]
