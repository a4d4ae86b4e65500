"""A loopback stand-in for the hosted Runpod API (`/v2/{endpoint}/run|runsync|status|stream|cancel|health`).

Only the HTTP shape is faked (routes, methods, bearer key, job states, 429/5xx answers); real renders
are tested against the SDK's local server. Scripted per test through `FakeHosted.plan`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHosted:
    def __init__(self, endpoint_id: str = "ep123", api_key: str = "secret-key"):
        self.endpoint_id, self.api_key = endpoint_id, api_key
        self.jobs: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_next: list[tuple[int, dict]] = []  # (HTTP status, headers) answered before the real one
        self.states = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]  # what successive /status calls report
        self.output = {"video_url": "https://cdn.example/v.mp4", "frames": 53, "engine": "parametric",
                       "timings_ms": {"total": 700.0}}
        self.error: str | None = None  # a job error string makes jobs end FAILED
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                with fake.lock:
                    fake.calls.append((method, self.path))
                    if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                        return self._answer(401, {"error": "unauthorized"})
                    if fake.fail_next:
                        code, headers = fake.fail_next.pop(0)
                        return self._answer(code, {"error": "try later"}, headers)
                    return self._answer(*fake.handle(method, self.path, body))

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2"

    def _final(self, job_id: str) -> dict:
        if self.error:
            return {"id": job_id, "status": "FAILED", "error": self.error, "delayTime": 5, "executionTime": 9}
        return {"id": job_id, "status": "COMPLETED", "output": self.output, "delayTime": 5, "executionTime": 700}

    def handle(self, method: str, path: str, body) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if parts[:2] != ["v2", self.endpoint_id]:
            return 404, {"error": "no such endpoint"}
        route, arg = parts[2], parts[3] if len(parts) > 3 else None
        if (method, route) == ("POST", "run"):
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs[job_id] = {"input": body["input"], "polls": 0, "cancelled": False}
            return 200, {"id": job_id, "status": "IN_QUEUE"}
        if (method, route) == ("POST", "runsync"):
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs[job_id] = {"input": body["input"], "polls": len(self.states), "cancelled": False}
            return 200, self._final(job_id)
        if route in ("status", "stream", "cancel") and arg not in self.jobs:
            return 404, {"error": "request does not exist"}
        if (method, route) == ("GET", "status"):
            job = self.jobs[arg]
            if job["cancelled"]:
                return 200, {"id": arg, "status": "CANCELLED"}
            state = self.states[min(job["polls"], len(self.states) - 1)]
            job["polls"] += 1
            return 200, self._final(arg) if state == "COMPLETED" else {"id": arg, "status": state}
        if (method, route) == ("GET", "stream"):
            job = self.jobs[arg]
            job["polls"] += 1
            if job["polls"] == 1:
                return 200, {"id": arg, "status": "IN_PROGRESS", "stream": [{"output": {"part": 1}}]}
            return 200, {"id": arg, "status": "COMPLETED", "stream": [{"output": {"part": 2}}]}
        if (method, route) == ("POST", "cancel"):
            self.jobs[arg]["cancelled"] = True
            return 200, {"id": arg, "status": "CANCELLED"}
        if (method, route) == ("GET", "health"):
            return 200, {"jobs": {"inQueue": 0}, "workers": {"idle": 1}}
        return 404, {"error": f"no route {method} {route}"}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def fast_client(fake: FakeHosted):
    """A client of `fake` that polls and backs off in milliseconds."""
    from avatar_engine.clients import AvatarClient, ClientConfig

    return AvatarClient(ClientConfig(endpoint_id=fake.endpoint_id, api_key=fake.api_key, endpoint_url_base=fake.base,
                                     poll_initial_s=0.01, poll_max_s=0.02, backoff_initial_s=0.01))
