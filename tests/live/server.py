"""A live server on a free local port, in a background thread, for tests and the bench."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager

from avatar_engine.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(settings: Settings | None = None, *, warm: bool = True):
    """Yields (base http URL, the app's LiveServer); stops the server afterwards."""
    import uvicorn

    from avatar_engine.live.server import create_app, max_ws_message

    settings = settings or Settings()
    app = create_app(settings, warm=warm)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            ws_max_size=max_ws_message(settings), ws_ping_interval=5.0, ws_ping_timeout=5.0)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app.state.live
    finally:
        server.should_exit = True
        thread.join(10)
