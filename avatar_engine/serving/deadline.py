"""One job's clock and cancel token: every stage of a render stops at the same deadline or on a cancel.

A `Deadline` is created when a job starts and handed through the pipeline (`RenderJob.deadline`).
Stages either check it in their own loops (`check`, per frame) or run under `call`, which runs a
blocking step in a helper thread and stops *waiting* for it when the job's time is up or the job is
cancelled, so a stuck DNS lookup, speech decoder or socket cannot hold the job. An abandoned step
keeps its thread until it returns; it must not leave anything behind (see `on_abandoned`).

Cancellation is a `JobCancelled` (a BaseException, like asyncio's CancelledError): no `except
Exception` fallback or retry swallows it, while `finally` blocks and context managers still clean up.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, TypeVar

from ..errors import AvatarError

T = TypeVar("T")

#: how often a waiting job looks at its cancel token (the cancel latency of a blocked stage)
POLL_S = 0.05


class JobCancelled(BaseException):
    """The job was stopped from outside (the SDK's stop-job path); nothing is delivered."""


class Deadline:
    """A `time.perf_counter()` instant after which the job ends with `timeout`, plus a cancel token."""

    def __init__(self, timeout_s: float, *, start: float | None = None, cancelled: threading.Event | None = None):
        self.timeout_s = float(timeout_s)
        self.start = time.perf_counter() if start is None else start
        self.at = self.start + self.timeout_s
        self.cancelled = cancelled or threading.Event()

    @classmethod
    def unbounded(cls) -> Deadline:
        return cls(math.inf)

    # -- state -------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.at - time.perf_counter()

    def expired(self) -> bool:
        return time.perf_counter() > self.at

    def cancel(self) -> None:
        self.cancelled.set()

    def timeout_error(self, stage: str) -> AvatarError:
        return AvatarError("timeout", f"the job took longer than the {self.timeout_s:.0f} s limit (JOB_TIMEOUT_S) "
                                      f"during {stage}", details={"stage": stage})

    def check(self, stage: str) -> None:
        """Raise `JobCancelled` after a cancel, `AvatarError("timeout")` once the time is up."""
        if self.cancelled.is_set():
            raise JobCancelled(stage)
        if self.expired():
            raise self.timeout_error(stage)

    # -- bounded blocking calls --------------------------------------------------------

    def call(self, fn: Callable[[], T], *, stage: str, limit_s: float | None = None,
             on_abandoned: Callable[[], None] | None = None) -> T:
        """`fn()` in a helper thread, waited for until it returns, the job is cancelled or its time
        (or `limit_s`, whichever is sooner) is up. Its exception is re-raised here.

        An abandoned `fn` runs on; `on_abandoned` then runs in its thread right after it returns (to
        delete what it made, e.g. an object uploaded after the job gave up on it).
        """
        self.check(stage)
        lock = threading.Lock()
        done = threading.Event()
        box: dict = {}
        abandoned = False

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            with lock:
                done.set()
                late = abandoned
            if late and on_abandoned is not None:
                try:
                    on_abandoned()
                except Exception:  # noqa: BLE001 - best effort; the job already ended
                    pass

        worker = threading.Thread(target=run, name=f"job-{stage}", daemon=True)
        worker.start()
        stop_at = self.at if limit_s is None else min(self.at, time.perf_counter() + limit_s)
        while not done.wait(max(0.0, min(POLL_S, stop_at - time.perf_counter()))):
            if self.cancelled.is_set() or time.perf_counter() >= stop_at:
                with lock:
                    if not done.is_set():
                        abandoned = True
                if abandoned:
                    if self.cancelled.is_set():
                        raise JobCancelled(stage)
                    if self.expired():
                        raise self.timeout_error(stage)
                    raise TimeoutError(stage)  # limit_s ran out first: the caller's own bound
        if "error" in box:
            raise box.pop("error")
        return box["value"]

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds` (never past the deadline), woken early by a cancel; then `check`."""
        self.cancelled.wait(max(0.0, min(seconds, self.remaining())))
        self.check(stage="wait")

    def __repr__(self) -> str:
        return f"Deadline(timeout_s={self.timeout_s}, remaining={self.remaining():.2f}, " \
               f"cancelled={self.cancelled.is_set()})"
