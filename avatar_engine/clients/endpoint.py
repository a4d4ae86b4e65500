"""A typed client for this worker's endpoint: hosted Runpod, a self-hosted base URL, or the SDK's local server.

    client = AvatarClient.from_env()             # RUNPOD_API_KEY + AVATAR_ENDPOINT_ID, or AVATAR_SERVICE_BASEURL
    result = client.render({"image_url": ..., "audio_url": ...})   # RenderResult, or raises JobFailed
    job = client.run({...}); final = client.wait(job.id, timeout_s=600)

Plain HTTP (`requests`, one session per client, bearer key), no Runpod SDK and nothing of the server, so an
orchestrator installs and imports it cheaply. What `runpod.Endpoint` / `Job` do not give, and this adds:

- the SDK local server's routes (`python handler.py --rp_serve_api`): POST for /status and /stream, no
  endpoint id in the path, no /cancel, a /run job that executes *inside* the first /status call (so that
  call gets a read timeout as long as the render, is never retried, and a second one answers
  "Job ID not found"), /stream refused for non-generator handlers (we fall back to the final status);
  the shape is detected from the server's OpenAPI document or set with `AVATAR_SERVICE_API`;
- retries (tenacity) with exponential backoff (and `Retry-After`) on 429, 5xx and connection errors, also
  for POST and https; a POST that may have reached the server (read timeout) is not retried, so a job is
  never submitted twice;
- `wait` with growing poll intervals and an overall deadline (the SDK polls every second, in whole seconds);
- `run_sync` keeping the failure (`Endpoint.run_sync` returns only `output`, so a FAILED job reads `None`),
  and continuing to poll when the hosted /runsync answers before the job finished;
- streaming deployments (`STREAM_OUTPUT=true`): their output is the list of streamed items, whose last item
  is the result (or the error, with its code); `JobStatus.output` is that last item, `chunks` the rest;
- typed results: `JobStatus`, `RenderResult` (the handler's result dict) and `JobFailed`, whose `code` is the
  worker's (`avatar_engine.errors.parse_error`), `timeout` for TIMED_OUT or a passed deadline;
- the API key from `RUNPOD_API_KEY` per client (the SDK reads a process-wide `runpod.api_key`).
"""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import requests
import tenacity
from pydantic import BaseModel, ConfigDict
from requests.adapters import HTTPAdapter

from ..errors import AvatarError, parse_error

log = logging.getLogger(__name__)

ApiShape = Literal["auto", "hosted", "local"]
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the hosted API root (the Runpod SDK's default, and its RUNPOD_ENDPOINT_BASE_URL override)
HOSTED_API_BASE = "https://api.runpod.ai/v2"
#: job states after which nothing changes (the Runpod API's final states)
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"})
_LOCAL_NOT_FOUND = "Job ID not found"
_LOCAL_NO_STREAM = "Stream not supported"


class RenderResult(BaseModel):
    """The handler's result for a render (README "Result"); engine-specific keys are kept as extras."""

    model_config = ConfigDict(extra="allow")

    video_url: str | None = None
    video_b64: str | None = None
    video_path: str | None = None
    video_bytes: int | None = None
    expires_at: str | None = None
    cached: bool | None = None
    engine: str | None = None
    quality_mode: str | None = None
    encoder: str | None = None
    width: int | None = None
    height: int | None = None
    fps: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    lipsync: str | None = None
    timings_ms: dict[str, float] = {}
    sync: dict | None = None
    fallback_from: list[dict] | None = None

    def video_ref(self) -> str | None:
        """Where the video is, as one string: its URL, a file:// URI, or a data: URI for base64."""
        if self.video_url:
            return self.video_url
        if self.video_path:
            return Path(self.video_path).as_uri()
        if self.video_b64:
            return "data:video/mp4;base64," + self.video_b64
        return None

    def save(self, path: str | Path) -> Path:
        """Write the MP4 to `path` (decoding base64, copying a local path, or downloading the URL)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        if self.video_b64:
            tmp.write_bytes(base64.b64decode(self.video_b64))
        elif self.video_path:
            tmp.write_bytes(Path(self.video_path).read_bytes())
        elif self.video_url:
            with requests.get(self.video_url, stream=True, timeout=(10, 120)) as resp:
                resp.raise_for_status()
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_content(1 << 20):
                        f.write(chunk)
        else:
            raise ValueError("the result holds no video")
        os.replace(tmp, target)
        return target


class JobFailed(AvatarError):
    """A job that ended without output; `code` is the worker's error code (or `timeout`)."""

    def __init__(self, code, message: str, *, job_id: str | None = None, status: str | None = None):
        super().__init__(code, message, details={"job_id": job_id, "status": status})
        self.job_id = job_id
        self.status = status


class EndpointError(AvatarError):
    """The endpoint could not be reached or refused the call (after retries); `http_status` when it answered."""

    def __init__(self, message: str, *, http_status: int | None = None):
        super().__init__("internal", message, details={"http_status": http_status})
        self.http_status = http_status


class JobNotFound(EndpointError):
    """The endpoint does not know this job id (expired, or the local server already ran it)."""


@dataclass
class JobStatus:
    """One answer of /run, /status or /runsync, typed."""

    id: str
    status: str  # IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT
    output: Any = None
    error: dict | None = None  # {"code", "message"} for FAILED (parse_error of the job's error)
    delay_ms: int | None = None
    execution_ms: int | None = None
    raw: dict = field(default_factory=dict, repr=False)
    chunks: list = field(default_factory=list, repr=False)  # a streaming job's items before its last one

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"

    def result(self) -> RenderResult:
        """The render result; raises `JobFailed` for anything but a completed render."""
        if self.status == "COMPLETED" and isinstance(self.output, dict):
            output = self.output
            if output.get("video_stream") and not output.get("video_b64"):
                output = {**output, "video_b64": video_from_chunks(self.chunks)}
            return RenderResult.model_validate(output)
        raise self.failure()

    def failure(self) -> JobFailed:
        if self.error:
            return JobFailed(self.error.get("code", "internal"), self.error.get("message", ""), job_id=self.id,
                             status=self.status)
        if self.status == "TIMED_OUT":
            return JobFailed("timeout", "the endpoint timed the job out (executionTimeout)", job_id=self.id,
                             status=self.status)
        if self.status == "CANCELLED":
            return JobFailed("internal", "the job was cancelled", job_id=self.id, status=self.status)
        if self.status == "COMPLETED":
            return JobFailed("internal", "the job completed without a render result", job_id=self.id,
                             status=self.status)
        return JobFailed("internal", f"the job is not finished ({self.status})", job_id=self.id, status=self.status)

    @classmethod
    def parse(cls, body: dict, job_id: str | None = None) -> "JobStatus":
        if not isinstance(body, dict) or "status" not in body:
            raise EndpointError(f"unexpected answer from the endpoint: {str(body)[:200]}")
        status = str(body["status"])
        error = parse_error(body["error"]) if body.get("error") else None
        output, chunks = body.get("output"), []
        if isinstance(output, list):  # a streaming deployment: the streamed items, the result last
            chunks, output = output[:-1], (output[-1] if output else None)
        if status == "COMPLETED" and isinstance(output, dict) and "error" in output:
            error, status = parse_error(output["error"]), "FAILED"  # a handler error passed on as output
        return cls(id=str(body.get("id") or job_id or ""), status=status, output=output, error=error,
                   delay_ms=body.get("delayTime"), execution_ms=body.get("executionTime"), raw=body, chunks=chunks)


def video_from_chunks(items: list) -> str | None:
    """A streaming deployment without a bucket sends the video only as inline fMP4 chunks (its last item
    refers to them, `video_stream`): their bytes in order, after the last `restart`, as one base64 string."""
    data: list[bytes] = []
    for item in items:
        if isinstance(item, dict) and item.get("event") == "restart":
            data = []
        elif isinstance(item, dict) and item.get("event") == "chunk":
            data.append(base64.b64decode(item.get("data_b64") or ""))
    return base64.b64encode(b"".join(data)).decode("ascii") if data else None


@dataclass(frozen=True)
class ClientConfig:
    """Where the endpoint is and how patiently to talk to it."""

    endpoint_id: str | None = None
    base_url: str | None = None  # self-hosted API root; wins over endpoint_id
    api_key: str | None = None
    api_shape: ApiShape = "auto"
    endpoint_url_base: str | None = None  # hosted API root; default runpod.endpoint_url_base (RUNPOD_ENDPOINT_BASE_URL)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0  # ordinary calls
    long_read_timeout_s: float = 3600.0  # calls that last a render: /runsync, the local server's /status
    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 20.0
    poll_initial_s: float = 0.5
    poll_max_s: float = 5.0

    @classmethod
    def from_env(cls, **overrides) -> "ClientConfig":
        env = os.environ
        values = dict(endpoint_id=env.get("AVATAR_ENDPOINT_ID") or None,
                      base_url=env.get("AVATAR_SERVICE_BASEURL") or None,
                      api_key=env.get("RUNPOD_API_KEY") or None,
                      api_shape=env.get("AVATAR_SERVICE_API") or "auto")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class AvatarClient:
    """run / run_sync / status / stream / cancel / wait against one endpoint."""

    def __init__(self, config: ClientConfig | None = None, **overrides):
        self.config = config or ClientConfig.from_env(**overrides)
        c = self.config
        if c.base_url:
            root = c.base_url.rstrip("/")
        elif c.endpoint_id:
            base = c.endpoint_url_base or os.environ.get("RUNPOD_ENDPOINT_BASE_URL") or HOSTED_API_BASE
            root = f"{base.rstrip('/')}/{c.endpoint_id}"
        else:
            raise ValueError("no endpoint: set AVATAR_ENDPOINT_ID (with RUNPOD_API_KEY) or AVATAR_SERVICE_BASEURL")
        if c.endpoint_id and not c.base_url and not c.api_key:
            raise ValueError("the hosted Runpod API needs an API key: set RUNPOD_API_KEY")
        self._http = requests.Session()
        self._http.headers["Content-Type"] = "application/json"
        if c.api_key:  # the local server ignores it
            self._http.headers["Authorization"] = f"Bearer {c.api_key}"
        for scheme in ("http://", "https://"):  # the tenacity loop in `_request` is the only retry
            self._http.mount(scheme, HTTPAdapter(max_retries=0, pool_maxsize=32))
        self.root = root
        self._shape: str | None = None if c.api_shape == "auto" else c.api_shape
        if self._shape is None and c.endpoint_id and not c.base_url:
            self._shape = "hosted"

    @classmethod
    def from_env(cls, **overrides) -> "AvatarClient":
        return cls(ClientConfig.from_env(**overrides))

    # -- transport ---------------------------------------------------------------------

    @property
    def shape(self) -> str:
        """"hosted" (Runpod /v2 API or a compatible proxy) or "local" (the SDK's --rp_serve_api server)."""
        if self._shape is None:
            self._shape = self._detect_shape()
        return self._shape

    def _detect_shape(self) -> str:
        try:
            doc = self._request("GET", "openapi.json", retry_read=True, timeout=5)
            post_status = "post" in (doc.get("paths", {}).get("/status/{job_id}") or {})
            return "local" if post_status else "hosted"
        except (EndpointError, ValueError):
            return "hosted"

    def _request(self, method: str, path: str, body: dict | None = None, *, retry_read: bool,
                 timeout: float | None = None) -> Any:
        """One call with retries on 429/5xx/connection errors; `retry_read`: also after a read timeout."""
        c = self.config
        read = timeout if timeout is not None else c.read_timeout_s
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, c.max_attempts)),
            wait=self._backoff, retry=tenacity.retry_if_exception_type(_Transient), reraise=True,
            before_sleep=lambda state: log.info("retrying %s %s (attempt %d of %d)", method, path,
                                                state.attempt_number + 1, c.max_attempts))
        try:
            return retrying(self._call_once, method, path, body, (c.connect_timeout_s, read), retry_read)
        except _Transient as exc:
            raise exc.error from None

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        """`Retry-After` when the server sent one, else exponential from `backoff_initial_s` with jitter."""
        c = self.config
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Transient) and error.retry_after is not None:
            return min(c.backoff_max_s, error.retry_after)
        delay = min(c.backoff_max_s, c.backoff_initial_s * 2 ** (state.attempt_number - 1))
        return min(c.backoff_max_s, delay * (1 + random.random() * 0.25))

    def _call_once(self, method: str, path: str, body: dict | None, timeout: tuple[float, float],
                   retry_read: bool) -> Any:
        """One HTTP exchange; raises `_Transient` for what another attempt may fix, `EndpointError` else."""
        try:
            resp = self._http.request(method, f"{self.root}/{path}", json=body, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            maybe_sent = isinstance(exc, requests.ReadTimeout) or (
                isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ConnectTimeout)
                and "RemoteDisconnected" in str(exc))
            error = EndpointError(f"{method} {path}: {type(exc).__name__}: {exc}")
            if maybe_sent and not retry_read:
                raise error from None
            raise _Transient(error) from None
        code = resp.status_code
        if code == 401:
            raise EndpointError(f"401 Unauthorized: check RUNPOD_API_KEY ({self.root})", http_status=401)
        if code == 404 and "/status/" in f"/{path}":
            raise JobNotFound(f"job not found: {path}", http_status=404)
        if code >= 400:
            error = EndpointError(f"{method} {path}: HTTP {code}: {resp.text[:300]}", http_status=code)
            if code in RETRY_STATUSES:
                raise _Transient(error, _retry_after(resp))
            raise error
        try:
            return resp.json()
        except ValueError as exc:  # not JSON
            raise EndpointError(f"{method} {path}: the answer is not JSON ({exc})") from None

    # -- API ---------------------------------------------------------------------------

    @staticmethod
    def _body(payload: dict | BaseModel, webhook: str | None = None) -> dict:
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json", exclude_unset=True, by_alias=False)
        body = {"input": payload}
        if webhook:
            body["webhook"] = webhook
        return body

    def run(self, payload: dict | BaseModel, *, webhook: str | None = None) -> JobStatus:
        """Queue a job (POST /run); its id is in the returned status."""
        body = self._request("POST", "run", self._body(payload, webhook), retry_read=False)
        return JobStatus.parse(body)

    def run_sync(self, payload: dict | BaseModel, *, timeout_s: float = 900.0,
                 on_status: Callable[[JobStatus], None] | None = None) -> JobStatus:
        """Run and wait for the final status (POST /runsync, then polling if the endpoint let go early)."""
        deadline = time.monotonic() + timeout_s
        body = self._request("POST", "runsync", self._body(payload), retry_read=False,
                             timeout=min(self.config.long_read_timeout_s, timeout_s + 30))
        status = JobStatus.parse(body)
        if status.done or not status.id:
            return status
        return self.wait(status.id, timeout_s=max(1.0, deadline - time.monotonic()), on_status=on_status)

    def status(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        """The job's current status. On the local server this call *runs* a /run job and returns its end."""
        if self.shape == "local":
            body = self._request("POST", f"status/{job_id}", None, retry_read=False,
                                 timeout=timeout_s or self.config.long_read_timeout_s)
            if body.get("status") == "FAILED" and body.get("error") == _LOCAL_NOT_FOUND:
                raise JobNotFound(f"job {job_id} not found on the local server")
        else:
            body = self._request("GET", f"status/{job_id}", retry_read=True)
        return JobStatus.parse(body, job_id)

    def wait(self, job_id: str, *, timeout_s: float = 900.0,
             on_status: Callable[[JobStatus], None] | None = None) -> JobStatus:
        """Poll until the job is final (growing intervals); `JobFailed("timeout")` past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        pause = self.config.poll_initial_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobFailed("timeout", f"job {job_id} did not finish within {timeout_s:.0f} s", job_id=job_id)
            try:
                status = self.status(job_id, timeout_s=remaining if self.shape == "local" else None)
            except EndpointError as exc:
                if self.shape == "local" and exc.http_status is None and time.monotonic() >= deadline - 1:
                    raise JobFailed("timeout", f"job {job_id} did not finish within {timeout_s:.0f} s",
                                    job_id=job_id) from None
                raise
            if on_status:
                on_status(status)
            if status.done:
                return status
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(self.config.poll_max_s, pause * 1.5)

    def stream(self, job_id: str, *, timeout_s: float = 900.0) -> Iterator[Any]:
        """Yield the job's stream chunks as they come; a non-streaming job yields its final output once."""
        deadline = time.monotonic() + timeout_s
        pause, yielded = self.config.poll_initial_s, False
        while True:
            if self.shape == "local":
                body = self._request("POST", f"stream/{job_id}", None, retry_read=False,
                                     timeout=max(1.0, deadline - time.monotonic()))
            else:
                body = self._request("GET", f"stream/{job_id}", retry_read=True)
            if body.get("status") == "FAILED" and _LOCAL_NO_STREAM in str(body.get("error", "")):
                final = self.wait(job_id, timeout_s=max(1.0, deadline - time.monotonic()))
                if not final.ok:
                    raise final.failure()
                yield final.output
                return
            for chunk in body.get("stream") or []:
                item = chunk.get("output") if isinstance(chunk, dict) else chunk
                if isinstance(item, dict) and "error" in item:  # the job's last item: its error, with its code
                    error = parse_error(item["error"])
                    raise JobFailed(error.get("code", "internal"), error.get("message", ""), job_id=job_id,
                                    status="FAILED")
                yielded = True
                yield item
            state = JobStatus.parse(body, job_id)
            if state.done:
                if state.status != "COMPLETED":
                    raise state.failure()
                if not yielded:
                    final = self.status(job_id)
                    if final.output is not None:
                        yield final.output
                return
            if time.monotonic() >= deadline:
                raise JobFailed("timeout", f"job {job_id} did not finish within {timeout_s:.0f} s", job_id=job_id)
            time.sleep(pause)
            pause = min(self.config.poll_max_s, pause * 1.5)

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued or running job (hosted API only: the SDK's local server has no /cancel)."""
        if self.shape == "local":
            raise EndpointError("the SDK's local API server has no /cancel route", http_status=404)
        return JobStatus.parse(self._request("POST", f"cancel/{job_id}", None, retry_read=True), job_id)

    def health(self) -> dict:
        """Hosted: /health (workers and queue); else the worker's `health` action, or `list_engines`."""
        if self.shape == "hosted":
            try:
                return self._request("GET", "health", retry_read=True)
            except EndpointError as exc:
                if exc.http_status != 404:
                    raise
        try:
            return self.action("health")
        except JobFailed as exc:
            if exc.code != "invalid_input":  # an older worker without the action
                raise
        return self.action("list_engines")

    def action(self, name: str, **params) -> dict:
        """Run a worker action (`{"action": name}`) synchronously and return its output."""
        status = self.run_sync({"action": name, **params}, timeout_s=120)
        if not status.ok:
            raise status.failure()
        return status.output

    def render(self, payload: dict | BaseModel, *, timeout_s: float = 900.0,
               on_status: Callable[[JobStatus], None] | None = None) -> RenderResult:
        """Submit, wait, and return the render result (raises `JobFailed` with the worker's code)."""
        job = self.run(payload)
        final = job if job.done else self.wait(job.id, timeout_s=timeout_s, on_status=on_status)
        return final.result()


class _Transient(Exception):
    """A failure another attempt may fix; `error` is what the caller gets when the attempts run out."""

    def __init__(self, error: EndpointError, retry_after: float | None = None):
        super().__init__(error.message)
        self.error, self.retry_after = error, retry_after


def _retry_after(resp) -> float | None:
    value = resp.headers.get("Retry-After") if resp is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None

