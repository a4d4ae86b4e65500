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
