"""MCP server (stdio): `render_avatar`, `list_avatars` and `health` tools for agents.

`python -m avatar_engine mcp` speaks MCP over stdin/stdout with the official SDK (`mcp` 2.x, whose
`MCPServer` is v1's `FastMCP`). It renders in this process, or forwards to the endpoint when
`AVATAR_SERVICE_BASEURL` or `AVATAR_ENDPOINT_ID` is set (`avatar_engine.clients.endpoint`). Progress goes out
as MCP progress notifications while the render runs (stdio delivers them; a streamable-HTTP server in
JSON-response mode would drop them). The video comes back as a `resource_link`: its bucket URL, or a
`file://` URI of the MP4 under `OUTPUT_DIR`. `mcp-tool.json` at the repo root describes the same
tools for gateways (`manifest()` builds it; a test keeps the two equal).

Local file paths are accepted here because the server runs on the caller's machine, as the CLI does.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ResourceLink, TextContent
from pydantic import Field

from .errors import AvatarError
from .schema import EngineName
from .settings import get_settings

log = logging.getLogger(__name__)

SERVER_NAME = "avatar-renderer"
_B64_RE = re.compile(r"^[A-Za-z0-9+/_=\s-]+$")
# progress (0-100) at the start of each pipeline stage; `render` spans 10..90 by its fraction
_STAGE_AT = {"fetch": 0, "decode": 5, "render": 10, "qa": 90, "deliver": 95, "done": 100}

server = MCPServer(
    name=SERVER_NAME,
    instructions="Render a lip-synced talking-head MP4 from a portrait and a speech recording with render_avatar; "
                 "list_avatars names stored portraits usable as avatar_id; health says which engines can run.",
)


def _remote():
    """The endpoint client when one is configured, else None (render here)."""
    if not (os.environ.get("AVATAR_SERVICE_BASEURL") or os.environ.get("AVATAR_ENDPOINT_ID")):
        return None
    from .clients.endpoint import AvatarClient

    return AvatarClient.from_env()


def _source(value: str, kind: str) -> dict:
    """A path, URL, data: URI or bare base64 string as the request's `<kind>_url` / `<kind>_b64` field."""
    text = value.strip()
    if text.lower().startswith(("http://", "https://")):
        return {f"{kind}_url": text}
    if text.lower().startswith("data:"):
        return {f"{kind}_b64": text}
    if len(text) < 4096:
        path = Path(text.removeprefix("file://")).expanduser()
        if path.is_file():
            return {f"{kind}_b64": base64.b64encode(path.read_bytes()).decode("ascii")}
    if len(text) >= 64 and _B64_RE.match(text):
        return {f"{kind}_b64": text}
    raise AvatarError("invalid_input", f"{kind} must be an http(s) URL, an existing file path or base64 data")


def _error(exc: AvatarError) -> CallToolResult:
    body = {"code": exc.code, "message": exc.message}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(body))], structured_content=body,
                          is_error=True)


def _video_result(result: dict, settings) -> CallToolResult:
    """The MP4 as a resource link (URL, or file:// of a path; base64 is written to OUTPUT_DIR first)."""
    result = dict(result)
    if result.get("video_b64"):
        target = Path(settings.output_dir) / f"{uuid.uuid4().hex}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(result.pop("video_b64")))
        result["video_path"] = str(target.resolve())
    uri = result.get("video_url") or Path(result["video_path"]).as_uri()
    size = result.get("video_bytes")
    link = ResourceLink(type="resource_link", uri=uri, name=Path(uri.split("?")[0]).name or "avatar.mp4",
                        mime_type="video/mp4", size=size, description="rendered talking-head MP4")
    summary = {k: v for k, v in result.items() if k != "video_b64"}
    summary["video"] = uri
    return CallToolResult(content=[link, TextContent(type="text", text=json.dumps(summary))],
                          structured_content=summary)


def _progress_bridge(ctx: Context) -> Callable[[str, float], None]:
    """A pipeline progress callback (called in a worker thread) that sends MCP progress notifications."""
    last = {"value": -1.0}

    def report(stage: str, fraction: float) -> None:
        base = _STAGE_AT.get(stage, last["value"])
        value = base + 80 * fraction if stage == "render" else base
        if value - last["value"] < 2 and stage != "done":
            return
        last["value"] = value
        try:
            anyio.from_thread.run(ctx.report_progress, value, 100.0, stage)
        except Exception:  # noqa: BLE001 - a lost notification must not fail the render
            log.debug("progress notification failed", exc_info=True)

    return report


@server.tool(name="render_avatar", description=(
    "Render a lip-synced talking-head MP4 from one portrait and one speech recording. image and audio "
    "each accept an http(s) URL, a local file path or base64 (plain or a data: URI); avatar_id names a "
    "stored portrait instead of image, text is spoken instead of audio. Returns the video as a resource "
    "link (URL or file:// path)."))
async def render_avatar(
    ctx: Context,
    audio: Annotated[str | None, Field(description="speech: http(s) URL, file path, or base64 / data: URI")] = None,
    image: Annotated[str | None, Field(description="portrait: http(s) URL, file path, or base64 / data: URI")] = None,
    avatar_id: Annotated[str | None, Field(description="a named avatar (see list_avatars) instead of image")] = None,
    quality_mode: Annotated[Literal["auto", "real_time", "high_quality"],
                            Field(description="encoder preset; high_quality also restores faces when GFPGAN is mounted")
                            ] = "auto",
    engine: Annotated[EngineName, Field(description="auto = the best engine that can run")] = "auto",
    transcript: Annotated[str | None, Field(description="what is said (better lip-sync for English)")] = None,
    text: Annotated[str | None, Field(description="words to speak instead of audio (the worker's TTS)")] = None,
    voice: Annotated[str | None, Field(description="for text: espeak:<voice> or piper:<name>")] = None,
    size: Annotated[int, Field(ge=64, le=1024, description="output long side in pixels")] = 512,
    fps: Annotated[int, Field(ge=10, le=60)] = 25,
    seed: Annotated[int, Field(ge=0, description="blinks and head motion are deterministic for a seed")] = 0,
) -> CallToolResult:
    settings = get_settings()
    try:
        if (image is None) == (avatar_id is None):
            raise AvatarError("invalid_input", "give exactly one of image or avatar_id")
        if (audio is None) == (text is None):
            raise AvatarError("invalid_input", "give exactly one of audio or text")
        payload: dict[str, Any] = {"quality_mode": quality_mode, "engine": engine, "size": size, "fps": fps,
                                   "seed": seed}
        payload.update(_source(audio, "audio") if audio is not None else {"text": text})
        payload.update(_source(image, "image") if image is not None else {"avatar_id": avatar_id})
        payload.update({k: v for k, v in (("transcript", transcript), ("voice", voice)) if v})
        remote = _remote()
        if remote is not None:
            result = await _render_remote(remote, payload, ctx)
        else:
            result = await _render_here(payload, ctx, settings)
        return _video_result(result, settings)
    except AvatarError as exc:
        return _error(exc)


async def _render_here(payload: dict, ctx: Context, settings) -> dict:
    from .media.delivery import get_store
    from .pipeline import render
    from .schema import parse_request

    payload = {**payload, "output": {"delivery": "url" if get_store(settings) is not None else "path"}}
    request = parse_request(payload)
    report = _progress_bridge(ctx)
    return await anyio.to_thread.run_sync(lambda: render(request, settings=settings, progress=report))


async def _render_remote(client, payload: dict, ctx: Context) -> dict:
    report = _progress_bridge(ctx)
    stages = {"IN_QUEUE": ("fetch", 0.0), "IN_PROGRESS": ("render", 0.0), "COMPLETED": ("done", 1.0)}

    def run() -> dict:
        report("fetch", 0.0)
        job = client.run(payload)
        report("decode", 0.0)
        final = job if job.done else client.wait(
            job.id, on_status=lambda s: report(*stages[s.status]) if s.status in stages else None)
        result = final.result().model_dump(exclude_none=True)
        report("done", 1.0)
        return result

    return await anyio.to_thread.run_sync(run)


def _local_action(name: str) -> dict:
    from .serving.actions import ACTIONS, run_action

    return run_action({"action": name}, get_settings()) if name in ACTIONS else run_action(
        {"action": "list_engines"}, get_settings())


@server.tool(name="list_avatars", description="Named avatars (stored portraits) usable as avatar_id, with sizes.",
             structured_output=True)
async def list_avatars() -> dict[str, Any]:
    remote = _remote()
    if remote is not None:
        return await anyio.to_thread.run_sync(lambda: remote.action("list_avatars"))
    return await anyio.to_thread.run_sync(lambda: _local_action("list_avatars"))


@server.tool(name="health", description="Whether the renderer is up and which engines can run there.",
             structured_output=True)
async def health() -> dict[str, Any]:
    remote = _remote()
    if remote is not None:
        return {"mode": "endpoint", **(await anyio.to_thread.run_sync(remote.health))}
    return {"mode": "local", **(await anyio.to_thread.run_sync(lambda: _local_action("health")))}


async def manifest() -> dict:
    """The `mcp-tool.json` document: how to start this server and the tools it offers."""
    tools = await server.list_tools()
    return {
        "schema_version": "1",
        "name": SERVER_NAME,
        "description": "Lip-synced talking-head video from a portrait and speech (Runpod worker avatar-renderer).",
        "transport": {"type": "stdio", "command": "python", "args": ["-m", "avatar_engine", "mcp"]},
        "env": {
            "AVATAR_SERVICE_BASEURL": "optional: forward renders to a self-hosted endpoint",
            "AVATAR_ENDPOINT_ID": "optional: forward renders to this Runpod endpoint (with RUNPOD_API_KEY)",
            "RUNPOD_API_KEY": "optional: the Runpod API key for AVATAR_ENDPOINT_ID",
        },
        "tools": [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools],
    }


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    server.run("stdio")


if __name__ == "__main__":
    main()
