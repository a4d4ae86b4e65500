"""The MCP server as an agent's host runs it: `python -m avatar_engine mcp` over stdio, driven by the
official SDK's client session (list tools, render with progress, a playable MP4 back)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from avatar_engine import mcp_server
from tests.support.media import ASSETS, REPO, probe_mp4

pytestmark = pytest.mark.slow


def _params(tmp_path, avatars_dir) -> StdioServerParameters:
    env = {"PYTHONPATH": str(REPO), "OUTPUT_DIR": str(tmp_path / "out"), "MODEL_ROOT": str(tmp_path / "models"),
           "AVATARS_DIR": str(avatars_dir), "LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "2",
           "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    return StdioServerParameters(command=sys.executable, args=["-m", "avatar_engine", "mcp"], env=env, cwd=str(REPO))


async def _session_run(params):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {t.name: t for t in (await session.list_tools()).tools}
            rendered = await session.call_tool("render_avatar", {
                "image": str(ASSETS / "astronaut_512.png"), "audio": str(ASSETS / "short_16k.wav"),
                "engine": "parametric", "quality_mode": "real_time", "size": 256}, progress_callback=on_progress)
            spoken = await session.call_tool("render_avatar", {
                "image": str(ASSETS / "astronaut_512.png"), "text": "Hello from the tool.", "engine": "parametric",
                "size": 256})
            refused = await session.call_tool("render_avatar", {"avatar_id": "../alice", "audio": "x"})
            avatars = await session.call_tool("list_avatars", {})
            health = await session.call_tool("health", {})
    return tools, rendered, spoken, refused, avatars, health, progress


def test_mcp_stdio_session(tmp_path, avatars_dir):
    tools, rendered, spoken, refused, avatars, health, progress = asyncio.run(
        asyncio.wait_for(_session_run(_params(tmp_path, avatars_dir)), 240))
    assert set(tools) == {"render_avatar", "list_avatars", "health"}
    assert {"image", "audio", "avatar_id", "quality_mode", "engine"} <= set(tools["render_avatar"].input_schema[
        "properties"])

    assert not rendered.is_error, rendered.content
    link = next(c for c in rendered.content if c.type == "resource_link")
    assert link.mime_type == "video/mp4" and link.uri.startswith("file://")
    path = Path(unquote(urlparse(link.uri).path))
    assert path.is_relative_to(tmp_path / "out")
    info = probe_mp4(path)  # PyAV decodes it: playable H.264 + AAC
    assert (info["video_codec"], info["audio_codec"], info["frames"]) == ("h264", "aac", 53)
    assert rendered.structured_content["engine"] == "parametric"

    values = [p[0] for p in progress]
    assert len(values) >= 3 and values == sorted(values) and values[-1] == 100
    assert {p[2] for p in progress} >= {"render", "done"} and all(p[1] == 100 for p in progress)

    assert not spoken.is_error, spoken.content  # text input: the embedded voice speaks it
    assert spoken.structured_content["lipsync"] == "synthesizer"
    assert refused.is_error and json.loads(refused.content[0].text)["code"] == "invalid_input"
    assert [a["id"] for a in avatars.structured_content["avatars"]] == ["alice"]
    assert health.structured_content["mode"] == "local"


def test_manifest_matches_the_server():
    """mcp-tool.json (what gateways read) lists exactly the tools the server serves, with their schemas."""
    committed = json.loads((REPO / "mcp-tool.json").read_text())
    assert committed == asyncio.run(mcp_server.manifest())
    assert committed["transport"]["args"] == ["-m", "avatar_engine", "mcp"]


def test_a_client_that_disconnects_stops_the_render(tmp_path):
    """Closing stdin mid-render (the host quit) stops the render at once and leaves no MP4 behind."""
    import subprocess
    import time
    import wave

    import numpy as np

    t = np.arange(16000 * 60) / 16000  # a minute of "speech": the render would take many seconds
    with wave.open(str(tmp_path / "long.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((8000 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype("<i2").tobytes())
    (tmp_path / "face.png").write_bytes((ASSETS / "astronaut_512.png").read_bytes())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OUTPUT_DIR": str(tmp_path / "out"), "LOG_LEVEL": "WARNING",
           "MODEL_ROOT": str(tmp_path / "models"), "MCP_FILE_ROOTS": str(tmp_path), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "avatar_engine", "mcp"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)

    def send(message):
        proc.stdin.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())
        proc.stdin.flush()

    try:
        send({"id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                                          "clientInfo": {"name": "test", "version": "1"}}})
        assert json.loads(proc.stdout.readline())["result"]["serverInfo"]["version"]
        send({"method": "notifications/initialized"})
        send({"id": 2, "method": "tools/call", "params": {"name": "render_avatar", "_meta": {"progressToken": 1},
              "arguments": {"image": str(tmp_path / "face.png"), "audio": str(tmp_path / "long.wav"),
                            "engine": "parametric", "size": 256}}})
        while (line := json.loads(proc.stdout.readline())).get("params", {}).get("message") != "render":
            assert "result" not in line, line  # the render must still be running
        proc.stdin.close()  # the client goes away
        t0 = time.monotonic()
        proc.wait(timeout=60)
        assert time.monotonic() - t0 < 8
    finally:
        proc.kill()
        proc.wait()
    assert list((tmp_path / "out").glob("*.mp4")) == []
