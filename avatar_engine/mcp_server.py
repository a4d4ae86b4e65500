"""MCP server (stdio): `render_avatar`, `list_avatars` and `health` tools for agents.

`python -m avatar_engine mcp` speaks MCP over stdin/stdout with the official SDK (`mcp` 2.x, whose
`MCPServer` is v1's `FastMCP`). It renders in this process through the same boundary as a Runpod job
(`serving.worker.run_job`: one deadline, MemoryError and unexpected exceptions become error codes), or
forwards to the endpoint when `AVATAR_SERVICE_BASEURL` or `AVATAR_ENDPOINT_ID` is set
(`avatar_engine.clients`). Progress goes out as MCP progress notifications while the render runs (stdio
delivers them; a streamable-HTTP server in JSON-response mode would drop them). A client that cancels
the call or disconnects stops the render, and the MP4 it would have returned is deleted.

The video comes back as a `resource_link`: its bucket URL, or a `file://` URI of the MP4 under
`OUTPUT_DIR`, which this server also serves through `resources/read`; `return_base64` embeds it as well.
The tool's arguments are the request model's fields (`schema.RenderRequest`: same types, bounds and
descriptions) plus `image` / `audio` sources; unknown arguments and rule violations come back as
`{"code", "message"}` with the REST error codes. `mcp-tool.json` at the repo root describes the same
tools for gateways (`manifest()` builds it; a test keeps the two equal).

Local file paths are read only under `MCP_FILE_ROOTS` (default: the server's working directory), and
only regular files no larger than the request caps, checked before a byte is read, off the event loop.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
import os
import re
import stat
import threading
import uuid
from collections.abc import Mapping
from copy import copy
from pathlib import Path
from typing import Annotated, Any, Callable

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.resources.templates import ResourceSecurity
from mcp.types import BlobResourceContents, CallToolResult, EmbeddedResource, ResourceLink, TextContent
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from . import __version__
from .errors import AvatarError, parse_error
from .schema import RenderRequest, describe_problems
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

SERVER_NAME = "avatar-renderer"
_B64_RE = re.compile(r"^[A-Za-z0-9+/_=\s-]+$")
# progress (0-100) at the start of each pipeline stage; `render` spans 10..90 by its fraction
_STAGE_AT = {"fetch": 0, "decode": 5, "render": 10, "qa": 90, "deliver": 95, "done": 100}
#: how long a cancelled call waits for the render thread to stop and clean up
STOP_WAIT_S = 5.0
#: request fields the tool takes as they are (types, bounds and descriptions from schema.RenderRequest)
PASSTHROUGH = ("avatar_id", "text", "voice", "transcript", "quality_mode", "engine", "size", "fps", "seed")


# -- arguments: derived from the request model ---------------------------------------------------


def _request_field(name: str) -> tuple[Any, Any]:
    info = copy(RenderRequest.model_fields[name])
    info.validation_alias = None  # the tool takes each field by its own name only
    return info.annotation, info


RenderArguments = create_model(
    "RenderArguments",
    __config__=ConfigDict(extra="forbid"),
    __doc__="render_avatar's arguments: the request fields plus image/audio sources; unknown names are refused.",
    audio=(str | None, Field(None, description="speech: http(s) URL, file path (under MCP_FILE_ROOTS), or base64 / "
                                            "data: URI")),
    image=(str | None, Field(None, description="portrait: http(s) URL, file path (under MCP_FILE_ROOTS), or base64 / "
                                            "data: URI")),
    **{name: _request_field(name) for name in PASSTHROUGH},
    return_base64=(bool, Field(False, description="also return the MP4 itself, base64 in an embedded resource "
                                                  "(at most MAX_BASE64_BYTES)")),
)


class _NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


_ARGUMENTS: dict[str, type[BaseModel]] = {"render_avatar": RenderArguments, "list_avatars": _NoArguments,
                                          "health": _NoArguments}


def _error(exc: AvatarError) -> CallToolResult:
    body = {"code": exc.code, "message": exc.message}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(body))], structured_content=body,
                          is_error=True)


class ArgumentGate:
    """Server middleware: a tool call's arguments are checked against the tool's model before the SDK sees
    them, so unknown names and rule violations come back as `{"code": "invalid_input", "message"}` (the
    REST shape, naming the field, never echoing the value) instead of the SDK's raw validation text."""

    async def __call__(self, ctx, call_next):
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        model = _ARGUMENTS.get(params.get("name")) if ctx.method == "tools/call" else None
        if model is not None:
            try:
                model.model_validate(params.get("arguments") or {})
            except ValidationError as exc:
                return _error(AvatarError("invalid_input", "; ".join(describe_problems(exc))))
        return await call_next(ctx)


server = MCPServer(
    name=SERVER_NAME,
    version=__version__,
    instructions="Render a lip-synced talking-head MP4 from a portrait and a speech recording with render_avatar; "
                 "list_avatars names stored portraits usable as avatar_id; health says which engines can run.",
    middleware=[ArgumentGate()],
)


# -- local files ----------------------------------------------------------------------------------


def file_roots(settings: Settings) -> list[Path]:
    """The folders local paths may come from: MCP_FILE_ROOTS, else the working directory (unless it is '/')."""
    if settings.mcp_file_roots is None:
        roots = [Path.cwd()]
    else:
        roots = [Path(p).expanduser() for p in settings.mcp_file_roots.split(os.pathsep) if p.strip()]
    resolved = [r.resolve() for r in roots]
    return [r for r in resolved if r != Path(r.anchor)]


def read_local_file(text: str, kind: str, settings: Settings) -> bytes:
    """A regular file under the roots (symlinks resolved first), at most the request's cap for `kind`,
    sized with stat before it is opened; anything else is `invalid_input` / `input_too_large`."""
    cap = settings.max_image_bytes if kind == "image" else settings.max_audio_bytes
    try:
        path = Path(text.removeprefix("file://")).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise AvatarError("invalid_input", f"{kind}: no such file") from None
    if not any(path.is_relative_to(root) for root in file_roots(settings)):
        raise AvatarError("invalid_input", f"{kind}: local files are read only under MCP_FILE_ROOTS "
                                           "(default: the server's working directory)")
    try:
        data = _read_regular(path, kind, cap)
    except OSError as exc:  # permissions, a file gone meanwhile: the reason, never the path
        raise AvatarError("invalid_input", f"{kind}: the file cannot be read ({exc.strerror})") from None
    if len(data) > cap:
        raise AvatarError("input_too_large", f"{kind}: the file is larger than {cap} bytes")
    return data


def _read_regular(path: Path, kind: str, cap: int) -> bytes:
    """At most `cap` + 1 bytes of a regular file, its type and size taken from stat before it is opened."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise AvatarError("invalid_input", f"{kind}: not a regular file")
    if info.st_size > cap:
        raise AvatarError("input_too_large", f"{kind}: the file is larger than {cap} bytes")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the stat
            raise AvatarError("invalid_input", f"{kind}: not a regular file")
        return f.read(cap + 1)


def _source(value: str, kind: str, settings: Settings) -> dict:
    """A path, URL, data: URI or bare base64 string as the request's `<kind>_url` / `<kind>_b64` field."""
    text = value.strip()
    if text.lower().startswith(("http://", "https://")):
        return {f"{kind}_url": text}
    if text.lower().startswith("data:"):
        return {f"{kind}_b64": text}
    if len(text) < 4096 and os.path.lexists(Path(text.removeprefix("file://")).expanduser()):
        return {f"{kind}_b64": base64.b64encode(read_local_file(text, kind, settings)).decode("ascii")}
    if len(text) >= 64 and _B64_RE.match(text):
        return {f"{kind}_b64": text}
    raise AvatarError("invalid_input", f"{kind} must be an http(s) URL, an existing file path or base64 data")


def _payload(arguments: BaseModel, settings: Settings) -> dict:
    """The request input for these arguments (reads local files: call it off the event loop)."""
    if (arguments.image is None) == (arguments.avatar_id is None):
        raise AvatarError("invalid_input", "give exactly one of image or avatar_id")
    if (arguments.audio is None) == (arguments.text is None):
        raise AvatarError("invalid_input", "give exactly one of audio or text")
    payload = {name: getattr(arguments, name) for name in PASSTHROUGH if getattr(arguments, name) is not None}
    if arguments.audio is not None:
        payload.update(_source(arguments.audio, "audio", settings))
    if arguments.image is not None:
        payload.update(_source(arguments.image, "image", settings))
    return payload


# -- rendering (in a worker thread) ----------------------------------------------------------------


def _remote():
    """The endpoint client when one is configured, else None (render here)."""
    if not (os.environ.get("AVATAR_SERVICE_BASEURL") or os.environ.get("AVATAR_ENDPOINT_ID")):
        return None
    from .clients.endpoint import AvatarClient

    return AvatarClient.from_env()


def _render_here(payload: dict, settings: Settings, deadline, report, as_base64: bool) -> dict:
    """Through the worker boundary, as a Runpod job would be: its error codes, its MemoryError handling."""
    from .media.delivery import get_store
    from .serving import worker

    delivery = "base64" if as_base64 else ("url" if get_store(settings) is not None else "path")
    job = {"id": f"mcp-{uuid.uuid4().hex[:12]}", "input": {**payload, "output": {"delivery": delivery}}}
    result = worker.run_job(job, settings=settings, deadline=deadline, progress=report)
    if "error" in result:
        error = parse_error(result["error"])
        raise AvatarError(error.get("code", "internal"), error.get("message", ""))
    return result


def _render_remote(client, payload: dict, deadline, report, as_base64: bool) -> dict:
    from .serving.deadline import JobCancelled

    stages = {"IN_QUEUE": ("fetch", 0.0), "IN_PROGRESS": ("render", 0.0), "COMPLETED": ("done", 1.0)}

    def on_status(status) -> None:
        if deadline.cancelled.is_set():
            raise JobCancelled("remote")
        if status.status in stages:
            report(*stages[status.status])

    report("fetch", 0.0)
    job = client.run({**payload, "output": {"delivery": "base64"}} if as_base64 else payload)
    report("decode", 0.0)
    try:
        final = job if job.done else client.wait(job.id, timeout_s=deadline.timeout_s, on_status=on_status)
    except JobCancelled:
        try:
            client.cancel(job.id)
        except AvatarError:  # the SDK's local server cannot cancel; the job ends on its own
            pass
        raise
    result = final.result().model_dump(exclude_none=True)
    report("done", 1.0)
    return result


def _keep_video(result: dict, settings: Settings) -> dict:
    """A base64 video is also written to OUTPUT_DIR, so the link can point at it."""
    if result.get("video_b64") and not result.get("video_path"):
        target = Path(settings.output_dir) / f"{uuid.uuid4().hex}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(result["video_b64"]))
        result = {**result, "video_path": str(target.resolve())}
    return result


def _discard(result: dict | None, settings: Settings) -> None:
    """Delete the MP4 a cancelled call made (only ever one under OUTPUT_DIR)."""
    path = Path(result["video_path"]) if result and result.get("video_path") else None
    if path is not None and path.resolve().parent == Path(settings.output_dir).resolve():
        path.unlink(missing_ok=True)


async def _run_cancellable(work: Callable[[Any], dict], settings: Settings) -> dict:
    """`work(deadline)` in a worker thread. If the call is cancelled (the client cancelled it or went
    away), the deadline's token stops the render, and what it delivered is deleted before we go on."""
    from .serving.deadline import Deadline

    deadline = Deadline(settings.job_timeout_s)
    finished = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work(deadline)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            box["error"] = exc
        finally:
            finished.set()

    try:
        await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        deadline.cancel()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(finished.wait, STOP_WAIT_S)
            await anyio.to_thread.run_sync(_discard, box.get("result"), settings)
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def _video_result(result: dict, as_base64: bool) -> CallToolResult:
    """The MP4 as a resource link (URL, or file:// of a path), plus the MP4 itself when asked."""
    uri = result.get("video_url") or Path(result["video_path"]).as_uri()
    link = ResourceLink(type="resource_link", uri=uri, name=Path(uri.split("?")[0]).name or "avatar.mp4",
                        mime_type="video/mp4", size=result.get("video_bytes"),
                        description="rendered talking-head MP4")
    summary = {k: v for k, v in result.items() if k != "video_b64"}
    summary["video"] = uri
    content: list = [link, TextContent(type="text", text=json.dumps(summary))]
    if as_base64 and result.get("video_b64"):
        content.append(EmbeddedResource(type="resource", resource=BlobResourceContents(
            uri=uri, blob=result["video_b64"], mime_type="video/mp4")))
    return CallToolResult(content=content, structured_content=summary)


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


async def render_avatar(ctx: Context, **arguments) -> CallToolResult:
    settings = get_settings()
    args = RenderArguments.model_validate(arguments)
    report = _progress_bridge(ctx)

    def work(deadline) -> dict:
        payload = _payload(args, settings)
        remote = _remote()
        if remote is not None:
            result = _render_remote(remote, payload, deadline, report, args.return_base64)
        else:
            result = _render_here(payload, settings, deadline, report, args.return_base64)
        return _keep_video(result, settings)

    try:
        return _video_result(await _run_cancellable(work, settings), args.return_base64)
    except AvatarError as exc:
        return _error(exc)
    except Exception as exc:  # noqa: BLE001 - outside run_job (a store, the client): the same boundary rule
        log.exception("render_avatar failed")
        return _error(AvatarError("internal", f"internal error ({type(exc).__name__}); the video was not rendered"))


render_avatar.__signature__ = inspect.Signature(  # the SDK reads the tool's schema from the signature
    [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info.default,
                         annotation=Annotated[info.annotation, info])
       for name, info in RenderArguments.model_fields.items()],
    return_annotation=CallToolResult)
server.add_tool(render_avatar, name="render_avatar", description=(
    "Render a lip-synced talking-head MP4 from one portrait and one speech recording. image and audio "
    "each accept an http(s) URL, a local file path or base64 (plain or a data: URI); avatar_id names a "
    "stored portrait instead of image, text is spoken instead of audio. Returns the video as a resource "
    "link (URL, or a file:// path this server serves through resources/read); return_base64 embeds it too."))


# -- the rendered MP4s as resources -----------------------------------------------------------------


def read_render(path: str, settings: Settings) -> bytes:
    """An MP4 this server delivered: a regular file directly in OUTPUT_DIR, at most MAX_BASE64_BYTES."""
    out = Path(settings.output_dir).resolve()
    target = Path("/" + path.lstrip("/")).resolve()
    if target.parent != out or target.suffix != ".mp4" or not target.is_file():
        raise ResourceNotFoundError(f"not a render of this server: {Path(path).name}")
    if target.stat().st_size > settings.max_base64_bytes:
        raise ResourceNotFoundError(f"{target.name} is larger than MAX_BASE64_BYTES; read it from OUTPUT_DIR")
    return target.read_bytes()


@server.resource("file://{+path}", name="render", mime_type="video/mp4",
                 description="an MP4 this server rendered (a file:// link from render_avatar, under OUTPUT_DIR)",
                 security=ResourceSecurity(exempt_params=frozenset({"path"})))
async def rendered_video(path: str) -> bytes:
    return await anyio.to_thread.run_sync(read_render, path, get_settings())


# -- other tools ------------------------------------------------------------------------------------


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
        "version": __version__,
        "description": "Lip-synced talking-head video from a portrait and speech (Runpod worker avatar-renderer).",
        "transport": {"type": "stdio", "command": "python", "args": ["-m", "avatar_engine", "mcp"]},
        "env": {
            "AVATAR_SERVICE_BASEURL": "optional: forward renders to a self-hosted endpoint",
            "AVATAR_ENDPOINT_ID": "optional: forward renders to this Runpod endpoint (with RUNPOD_API_KEY)",
            "RUNPOD_API_KEY": "optional: the Runpod API key for AVATAR_ENDPOINT_ID",
            "MCP_FILE_ROOTS": "optional: folders local image/audio paths may come from, ':'-separated "
                              "(default: the working directory; empty: none)",
        },
        "tools": [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools],
    }


def main() -> None:
    logging.basicConfig(level=get_settings().log_level or "WARNING")
    server.run("stdio")


if __name__ == "__main__":
    main()
