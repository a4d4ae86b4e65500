"""`python -m avatar_engine live`: the live talking-head server (Starlette on uvicorn).

`GET /ping` answers 204 while the models load and 200 once ready (Runpod load-balancing health
check); `GET /` is a page to try it; `WS /live` is the session protocol (docs/LIVE.md). When the
platform sets `PORT_HEALTH` to another port, a second listener answers `/ping` there.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..errors import AvatarError
from ..settings import Settings, get_settings
from .protocol import close_code, error_message, parse_json, parse_start

log = logging.getLogger(__name__)


def session_cap(settings: Settings) -> int:
    """LIVE_MAX_SESSIONS, or by cores: a 512 px / 25 fps session needs about a fifth of one core."""
    if settings.live_max_sessions:
        return settings.live_max_sessions
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, 2 * cores)


def warm_up() -> None:
    """Load what the first session would otherwise wait for: the face models, eSpeak, the encoders."""
    import numpy as np

    from ..face.landmarks import get_face_mesh
    from .encoder import LiveEncoder

    get_face_mesh()
    encoder = LiveEncoder(64, 64, 25, 16000)
    encoder.encode(np.zeros((64, 64, 3), np.uint8), np.zeros(640, np.float32))
    try:
        from ..speech.espeak import engine

        engine()
    except Exception as exc:  # noqa: BLE001 - text input reports it per message; audio still works
        log.warning("eSpeak unavailable for live text: %s", exc)


class LiveServer:
    """Shared state of one server process: readiness and the session slots."""

    def __init__(self, settings: Settings, *, warm: bool = True):
        self.settings = settings
        self.ready = threading.Event()
        self.cap = session_cap(settings)
        self.active = 0
        if warm:
            threading.Thread(target=self._warm, name="live-warm-up", daemon=True).start()
        else:
            self.ready.set()

    def _warm(self) -> None:
        try:
            warm_up()
        finally:
            self.ready.set()

    def authorized(self, ws: WebSocket) -> bool:
        token = self.settings.live_token
        if token is None:
            return True
        header = ws.headers.get("authorization", "")
        candidates = [header[7:] if header.lower().startswith("bearer ") else "", ws.query_params.get("token", "")]
        expected = token.get_secret_value().encode()
        # either place: behind a gateway that wants its own key in the header (Runpod), the token goes in the URL
        return any(hmac.compare_digest(c.encode(), expected) for c in candidates if c)

    def admit(self, ws: WebSocket) -> None:
        if not self.authorized(ws):
            raise AvatarError("unauthorized", "a bearer token (LIVE_TOKEN) is needed: an Authorization header "
                                              "or ?token=")
        if not self.ready.is_set():
            raise AvatarError("busy", "the worker is still loading; try again in a few seconds")
        if self.active >= self.cap:
            raise AvatarError("busy", f"all {self.cap} live sessions are taken (LIVE_MAX_SESSIONS); try again later")

    async def ping(self, _request: Request) -> Response:
        return Response(status_code=200 if self.ready.is_set() else 204)

    async def page(self, _request: Request) -> Response:
        html = resources.files("avatar_engine.live").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    async def live(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            self.admit(ws)
        except AvatarError as exc:
            await _refuse(ws, exc)
            return
        self.active += 1
        try:
            await self._session(ws)
        finally:
            self.active -= 1

    async def _session(self, ws: WebSocket) -> None:
        from .session import LiveSession, open_stream

        try:
            message = await asyncio.wait_for(ws.receive(), 30.0)
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                raise AvatarError("invalid_input", 'the first message must be a JSON {"type": "start", ...}')
            start = parse_start(parse_json(message["text"]))
            stream, first = await asyncio.get_running_loop().run_in_executor(None, open_stream, start, self.settings)
        except asyncio.TimeoutError:
            await _refuse(ws, AvatarError("timeout", "no start message within 30 s"))
            return
        except AvatarError as exc:
            await _refuse(ws, exc)
            return
        except Exception:  # noqa: BLE001 - a bad portrait must not reach the server
            log.exception("live session could not start")
            await _refuse(ws, AvatarError("internal", "the session could not start; the worker log has the details"))
            return
        await LiveSession(ws, start, stream, self.settings).run(first)


async def _refuse(ws: WebSocket, exc: AvatarError) -> None:
    try:
        await ws.send_json(error_message(exc))
        await ws.close(close_code(exc.code), exc.message[:120])
    except Exception:  # noqa: BLE001 - the client may be gone already
        pass


def create_app(settings: Settings | None = None, *, warm: bool = True) -> Starlette:
    server = LiveServer(settings or get_settings(), warm=warm)
    app = Starlette(routes=[Route("/ping", server.ping), Route("/", server.page),
                            WebSocketRoute("/live", server.live)])
    app.state.live = server
    return app


def max_ws_message(settings: Settings) -> int:
    """The protocol-level frame cap: a `start` message carries the portrait as base64."""
    return max(settings.live_max_message_bytes, settings.max_image_bytes * 4 // 3 + 65536)


async def _serve(host: str, port: int, settings: Settings) -> None:
    import uvicorn

    app = create_app(settings)
    configs = [uvicorn.Config(app, host=host, port=port, ws_max_size=max_ws_message(settings), log_level="info",
                              ws_ping_interval=10.0, ws_ping_timeout=10.0)]
    if settings.port_health and settings.port_health != port:
        health = Starlette(routes=[Route("/ping", app.state.live.ping)])
        configs.append(uvicorn.Config(health, host=host, port=settings.port_health, log_level="warning"))
    await asyncio.gather(*(uvicorn.Server(c).serve() for c in configs))


def main(host: str = "0.0.0.0", port: int | None = None) -> None:
    settings = get_settings()
    asyncio.run(_serve(host, port or settings.port, settings))
