"""A loopback proxy in front of the storage emulator that fails or stalls chosen requests (fault tests)."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler

from .http import serve


class BucketProxy:
    """Loopback proxy in front of the emulator. For requests `armed` matches it forwards, then
    either answers 503 (the server kept the object, the client sees a failure) or stalls without
    answering until released (bounded) so the client's read timeout fires."""

    def __init__(self, upstream_port: int):
        self.mode: str | None = None
        self.uploads = 0
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upload = self.path.startswith("/upload/storage/v1/")
                proxy.uploads += upload
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "content-length", "transfer-encoding", "expect")}
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    status, resp_headers, data = resp.status, resp.getheaders(), resp.read()
                finally:
                    conn.close()
                if upload and proxy.mode == "stall":
                    proxy.release.wait(5)
                    self.close_connection = True
                    return
                if upload and proxy.mode == "503":
                    status, data = 503, b'{"error": {"code": 503, "message": "injected"}}'
                    resp_headers = [("Content-Type", "application/json")]
                self.send_response(status)
                for k, v in resp_headers:
                    if k.lower() not in ("connection", "content-length", "transfer-encoding", "keep-alive"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self.server, self.url, _thread = serve(Handler)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
