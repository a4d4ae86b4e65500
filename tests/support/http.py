"""A loopback HTTP server with hostile routes, for fetch and end-to-end tests (127.0.0.1 only)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str, threading.Thread]:
    """A loopback HTTP server on a free port, serving in a daemon thread: (server, base URL, thread)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", thread


class HostileServer:
    """Serves `files` plus misbehaving routes. Every loop is bounded in count and time."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server naming
                path = self.path.split("?")[0]
                port = outer.port
                if path in outer.files:
                    return self._send(200, outer.files[path], {"Content-Type": "application/octet-stream"})
                if path == "/500":
                    return self._send(500, b"boom")
                if path == "/loop":
                    return self._send(302, headers={"Location": "/loop"})
                if path.startswith("/hop/"):
                    n = int(path.rsplit("/", 1)[1])
                    target = f"/hop/{n - 1}" if n > 1 else "/image.png"
                    return self._send(302, headers={"Location": target})
                if path == "/to-metadata":
                    return self._send(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
                if path == "/to-private":
                    return self._send(302, headers={"Location": "http://10.1.2.3/x.png"})
                if path == "/to-loopback":
                    return self._send(302, headers={"Location": f"http://127.0.0.1:{port}/image.png"})
                if path == "/to-file":
                    return self._send(302, headers={"Location": "file:///etc/passwd"})
                if path == "/html":
                    return self._send(200, b"<!doctype html><html><body>not an image</body></html>",
                                      {"Content-Type": "image/png"})
                if path == "/empty":
                    return self._send(200, b"")
                if path == "/short-body":  # promises more than it sends, then hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
                    return
                if path == "/huge-declared":
                    return self._send(200, b"x", {"Content-Length": str(10 ** 10)})
                if path == "/endless":  # no length, streams until the client gives up (bounded)
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    chunk = b"\x00" * 65536
                    deadline = time.monotonic() + 10
                    try:
                        while time.monotonic() < deadline:
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                    return
                if path == "/drip":  # one byte every 0.2 s, for at most 10 s
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(50):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                    return
                if path == "/stall":  # headers, then silence (bounded)
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.flush()
                    time.sleep(6)
                    return
                return self._send(404, b"not found")

        self.server, self.base, self.thread = serve(Handler)
        self.port = self.server.server_address[1]

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
