"""The Runpod handlers: cancellable handlers, streaming, and how many jobs at once.

The SDK runs each job as an asyncio task and stops a job (cancel, timeout) by cancelling that task
(`JobScaler.stop_job`). A plain sync handler would block the event loop and could not be stopped, so
both handlers here are async: the render runs in a worker thread (`worker.run_job`) under one
`Deadline` (JOB_TIMEOUT_S from the job's start) whose cancel token the task sets when it is
cancelled; the task then waits (up to `STOP_WAIT_S`) for the render thread to clean up (temp dir,
partial objects) before the CancelledError goes on to the SDK. The pipeline checks the token per
frame and in every stage, so rendering stops well within a second.

* `run_async`: one job -> one result dict (the default deployment; `/run`, `/runsync` unchanged).
* `stream_async`: an async generator (STREAM_OUTPUT=true, the `/stream` contract): live events as the
  video renders (media/hls.py), the usual result dict last.
* `concurrency_modifier`: JOB_CONCURRENCY, capped by what is safe here (CPU: cores; GPU: free memory).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any, AsyncIterator

from ..errors import AvatarError
from ..runtime.device import GIB, cuda_visible, gpu_free_bytes
from ..schema import parse_request
from ..settings import Settings, get_settings
from .deadline import Deadline
from .worker import error_result, run_job

log = logging.getLogger(__name__)

#: how long a cancelled job's task waits for the render thread to remove what it made
STOP_WAIT_S = 5.0
#: GPU memory one neural-engine job may need at most (SadTalker 256 + GFPGAN in fp16, with headroom)
GPU_GB_PER_JOB = 4.0

_DONE = object()


# -- how many jobs at once ---------------------------------------------------------------------


def _gpu_free_gb() -> float | None:
    """Free memory of the first CUDA device in GiB, or None without one (no import cost on CPU boxes)."""
    if not cuda_visible(import_torch=False):
        return None
    try:
        return gpu_free_bytes(import_torch=False) / GIB
    except Exception:  # noqa: BLE001 - a broken driver: treat as CPU-only
        return None


@functools.lru_cache(maxsize=4)
def job_slots(requested: int) -> int:
    """At most `requested` jobs, and no more than the machine carries: on a GPU, one per
    `GPU_GB_PER_JOB` of memory free now (measured once, after warm-up loaded the models); on a CPU
    (the embedded engine), one per core."""
    requested = max(1, int(requested))
    free_gb = _gpu_free_gb()
    safe = max(1, int(free_gb // GPU_GB_PER_JOB)) if free_gb is not None else max(1, os.cpu_count() or 1)
    slots = min(requested, safe)
    if slots < requested:
        log.info("JOB_CONCURRENCY=%d capped to %d on this machine", requested, slots)
    return slots


def concurrency_modifier(current: int) -> int:
    """The SDK's `concurrency_modifier`: a constant, so JobScaler never waits to resize mid-flight."""
    return job_slots(get_settings().job_concurrency)


_semaphores: dict[int, asyncio.Semaphore] = {}


def _slots() -> asyncio.Semaphore:
    """The same limit for the SDK's local API server, which takes every request at once."""
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _semaphores:
        _semaphores[loop_id] = asyncio.Semaphore(concurrency_modifier(1))
    return _semaphores[loop_id]


# -- handlers ----------------------------------------------------------------------------------


def _rejected(job: dict) -> dict | None:
    """The error result of a request that fails validation (checked before it waits for a slot, so a bad
    request is answered at once, not after the renders ahead of it); None for a valid one or an action."""
    payload = job.get("input") if isinstance(job, dict) else None
    if isinstance(payload, dict) and "action" in payload:
        return None
    try:
        parse_request(payload)
    except AvatarError as exc:
        return error_result(exc)
    return None


async def _stopped(future: asyncio.Future, deadline: Deadline) -> None:
    """The job's task was cancelled: tell the render thread and give it time to clean up."""
    deadline.cancel()
    done, _ = await asyncio.wait({future}, timeout=STOP_WAIT_S)
    if not done:
        log.warning("a cancelled job did not stop within %.0f s; its thread is left to finish", STOP_WAIT_S)


async def run_async(job: dict, *, settings: Settings | None = None) -> dict:
    """One job to one result dict, cancellable (see the module docstring)."""
    settings = settings or get_settings()
    if (rejected := _rejected(job)) is not None:
        return rejected
    deadline = Deadline(settings.job_timeout_s)
    async with _slots():
        future = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(run_job, job, settings=settings, deadline=deadline))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await _stopped(future, deadline)
            raise


async def stream_async(job: dict, *, settings: Settings | None = None) -> AsyncIterator[dict[str, Any]]:
    """Live events while the job renders, then its result dict (or `{"error": ...}`) as the last item."""
    settings = settings or get_settings()
    if (rejected := _rejected(job)) is not None:
        yield rejected
        return
    deadline = Deadline(settings.job_timeout_s)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit(event: dict) -> None:  # called on the render thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    async with _slots():
        future = loop.run_in_executor(None, functools.partial(run_job, job, settings=settings, deadline=deadline,
                                                              emit=emit))
        future.add_done_callback(lambda _: events.put_nowait(_DONE))  # runs on the loop, after every emit
        try:
            while (event := await events.get()) is not _DONE:
                yield event
            yield future.result()
        except asyncio.CancelledError:
            await _stopped(future, deadline)
            raise
        except GeneratorExit:  # the consumer stopped reading: stop rendering, the thread cleans up
            deadline.cancel()
            raise


def sdk_config(handler) -> dict:
    """What `runpod.serverless.start` gets: the handler, aggregated streams for `/run`, concurrency."""
    return {"handler": handler, "return_aggregate_stream": True, "concurrency_modifier": concurrency_modifier}
