"""Overlap frame production with encoding: a bounded queue fed by a background thread.

numpy, OpenCV and torch release the GIL in their kernels, so the engine and x264 run in parallel
on separate cores; the queue bound keeps memory flat whatever the clip length.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 4, *, check: Callable[[], None] | None = None) -> Iterator[T]:
    """Yield `items` while a thread computes up to `depth` ahead. Closing the generator stops it.

    `check` runs every 50 ms while the consumer waits for the next item (a job's deadline / cancel
    token), so a stalled producer cannot hold the consumer past it."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(obj) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(_Failure(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass

    worker = threading.Thread(target=produce, name="frame-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            try:
                obj = q.get(timeout=0.05)
            except queue.Empty:
                if check is not None:
                    check()
                continue
            if obj is _DONE:
                return
            if isinstance(obj, _Failure):
                raise obj.exc
            yield obj
    finally:
        stop.set()
        worker.join(timeout=5)
