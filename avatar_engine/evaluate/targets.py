"""Where the scenarios run: in this process through the worker boundary, against the SDK's local API
server, or against a deployed endpoint through the project's client. Each target turns one request into
an `Outcome`: the worker's result (or its error code), the MP4 on this machine and the times seen here."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import AvatarError
from ..settings import get_settings


@dataclass
class Outcome:
    """One request's end as the evaluator saw it."""

    result: dict | None  # the worker's result dict (None when the job failed)
    error: dict | None  # {"code", "message"} of a failed job
    video: Path | None  # the MP4, saved on this machine
    wall_s: float  # request sent -> result in hand
    first_chunk_s: float | None = None  # streaming: request sent -> first live segment in hand


class Target(Protocol):
    kind: str

    def describe(self) -> dict: ...

    def run(self, payload: dict, video_path: Path, *, stream: bool) -> Outcome: ...


def _is_segment(event: Any) -> bool:
    return isinstance(event, dict) and event.get("event") in ("chunk", "segment")


def _final_output(output: Any) -> Any:
    """A streaming handler's aggregated `/run` output is a list of events ending with the result dict."""
    if isinstance(output, list):
        finals = [item for item in output if isinstance(item, dict) and "event" not in item]
        return finals[-1] if finals else None
    return output


class LocalTarget:
    """In process, through `worker.run_job` (the boundary the Runpod handler and MCP use)."""

    kind = "local"

    def __init__(self):
        from ..serving.worker import run_job, warm_up

        self._run_job = run_job
        started = time.perf_counter()
        warm_up()
        self.warm_up_s = round(time.perf_counter() - started, 3)

    def describe(self) -> dict:
        health = self._run_job({"id": "evaluate-health", "input": {"action": "health"}})
        return {"kind": self.kind, "warm_up_s": self.warm_up_s, "health": health}

    def run(self, payload: dict, video_path: Path, *, stream: bool) -> Outcome:
        settings = get_settings().model_copy(update={"output_dir": video_path.parent})
        job = {"id": f"evaluate-{uuid.uuid4().hex[:8]}",
               "input": {**payload, "output": {"delivery": "path", "name": video_path.name}}}
        first: list[float] = []

        def emit(event: dict) -> None:
            if _is_segment(event) and not first:
                first.append(time.perf_counter())

        started = time.perf_counter()
        result = self._run_job(job, settings=settings, emit=emit if stream else None)
        wall = time.perf_counter() - started
        first_s = first[0] - started if first else None
        if "error" in result:
            from ..errors import parse_error

            return Outcome(None, parse_error(result["error"]), None, wall, first_s)
        return Outcome(result, None, Path(result["video_path"]), wall, first_s)


class RemoteTarget:
    """The local API server (`api:URL`) or a deployed endpoint (`endpoint:ID`) through `AvatarClient`."""

    def __init__(self, kind: str, where: str, *, timeout_s: float = 900.0):
        from ..clients.endpoint import AvatarClient

        self.kind, self.where, self.timeout_s = kind, where, timeout_s
        try:
            self.client = AvatarClient(base_url=where) if kind == "api" else AvatarClient(endpoint_id=where)
        except ValueError as exc:  # no API key for the hosted API
            raise AvatarError("invalid_input", f"--target {kind}:{where}: {exc}") from None

    def describe(self) -> dict:
        try:
            health = self.client.health()
        except AvatarError as exc:
            health = {"error": exc.to_dict()}
        return {"kind": self.kind, "where": self.where, "api_shape": self.client.shape, "health": health}

    def _streamed(self, job_id: str, started: float) -> tuple[Any, float | None, list]:
        first, output, items = None, None, []
        for item in self.client.stream(job_id, timeout_s=self.timeout_s):
            items.append(item)
            if _is_segment(item) and first is None:
                first = time.perf_counter() - started
            if isinstance(item, (dict, list)) and not (isinstance(item, dict) and "event" in item):
                output = item
        return output, first, items

    def run(self, payload: dict, video_path: Path, *, stream: bool) -> Outcome:
        from ..clients.endpoint import RenderResult, video_from_chunks

        started, first = time.perf_counter(), None
        try:
            job = self.client.run(payload)
            if stream and not job.done:
                output, first, items = self._streamed(job.id, started)
            else:
                final = job if job.done else self.client.wait(job.id, timeout_s=self.timeout_s)
                if not final.ok:
                    raise final.failure()
                output, items = final.output, final.chunks
            items = output if isinstance(output, list) else items
            output = _final_output(output)
            if isinstance(output, dict) and output.get("video_stream") and not output.get("video_b64"):
                output = {**output, "video_b64": video_from_chunks(items)}  # no bucket: the chunks are the video
            if not isinstance(output, dict):
                raise AvatarError("internal", "the job ended without a render result")
            if "error" in output:
                from ..errors import parse_error

                error = parse_error(output["error"])
                return Outcome(None, error, None, time.perf_counter() - started, first)
            wall = time.perf_counter() - started
            RenderResult.model_validate(output).save(video_path)
        except AvatarError as exc:
            return Outcome(None, {"code": exc.code, "message": exc.message}, None, time.perf_counter() - started,
                           first)
        result = {k: v for k, v in output.items() if k != "video_b64"}
        return Outcome(result, None, video_path, wall, first)


def make_target(spec: str, *, timeout_s: float = 900.0) -> Target:
    """`local`, `api:URL` or `endpoint:ID` (see `python -m avatar_engine evaluate --help`)."""
    kind, _, where = spec.partition(":")
    if kind == "local" and not where:
        return LocalTarget()
    if kind in ("api", "endpoint") and where:
        return RemoteTarget(kind, where, timeout_s=timeout_s)
    raise AvatarError("invalid_input", f"--target {spec!r}: use local, api:URL or endpoint:ID")
