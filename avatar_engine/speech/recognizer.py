"""Free phone recognition in a helper process, so it never holds this process's interpreter.

pocketsphinx keeps the GIL for as long as it decodes: in a thread it stalls the renderer, the encoder
and every other job (and a cancel) until it returns. One child process per worker process (started on
first use or at warm-up, `python -m avatar_engine.speech.recognizer`) decodes one speech stretch per
request; the caller waits on the pipe in 50 ms steps, checking its job's deadline and cancel token,
and simply stops waiting when the job ends (the stale answer is skipped by the next request). A child
that dies is started again on the next request.

Protocol: request = 12-byte header (id, CMN byte count, PCM byte count; little-endian uint32), the
cepstral mean to start from (text, empty = the model's initial one), 16 kHz s16le PCM, on stdin;
answer = one JSON line `{"id": n, "phones": [[label, first_frame, last_frame], ...], "cmn": "..."}`.
The caller carries the cepstral mean from one stretch of its clip to the next, so the phones depend on
that clip alone, never on which other job the helper served before.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<III")
_POLL_S = 0.05

Check = Callable[[], None]


class RecognizerUnavailable(RuntimeError):
    """The helper process cannot be started or died mid-request: recognise in this process instead."""


class PhoneProcess:
    """The helper process and its pipe; one request at a time (concurrent jobs interleave per stretch)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._pending = b""  # answer bytes read but not yet used

    def _start(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "avatar_engine.speech.recognizer"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env=env, bufsize=0)
        except OSError as exc:
            raise RecognizerUnavailable(f"cannot start the phone recognizer: {exc}") from exc
        self._proc, self._pending = proc, b""
        return proc

    def start(self) -> None:
        """Start the helper now (warm-up), so the first job does not pay its ~0.5 s start."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    def decode(self, pcm: bytes, cmn: str, check: Check | None = None) -> tuple[list[tuple[str, int, int]], str]:
        """Phones (label, first 10 ms frame, last frame) of one utterance and the cepstral mean after it,
        starting from `cmn`. `check` runs every 50 ms while waiting (for the lock or the answer);
        whatever it raises ends the wait at once."""
        while not self._lock.acquire(timeout=_POLL_S):
            if check is not None:
                check()
        try:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            request = next(self._ids)
            try:
                start = cmn.encode()
                proc.stdin.write(_HEADER.pack(request, len(start), len(pcm)) + start + pcm)
                return self._answer(proc, request, check)
            except (OSError, ValueError, json.JSONDecodeError) as exc:
                self.close()
                raise RecognizerUnavailable(f"phone recognizer failed: {exc}") from exc
        finally:
            self._lock.release()

    def _answer(self, proc: subprocess.Popen, request: int, check: Check | None) -> tuple[list, str]:
        fd = proc.stdout.fileno()
        while True:
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                answer = json.loads(line)
                if answer["id"] != request:
                    continue  # the answer to a request whose job stopped waiting
                if "error" in answer:
                    raise RecognizerUnavailable(answer["error"])
                return [tuple(p) for p in answer["phones"]], answer["cmn"]
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise OSError("the phone recognizer exited")
                self._pending += chunk
            elif check is not None:
                check()


_process: PhoneProcess | None = None
_process_lock = threading.Lock()


def phone_process() -> PhoneProcess:
    global _process
    with _process_lock:
        if _process is None:
            _process = PhoneProcess()
            atexit.register(_process.close)
        return _process


def _serve() -> None:
    """The helper's loop: read a request, decode it, answer; exit when stdin closes."""
    from .phonemes import _allphone_decoder, decode_with_cmn

    decoder = _allphone_decoder()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        request, cmn_size, size = _HEADER.unpack(header)
        cmn = stdin.read(cmn_size).decode()
        pcm = stdin.read(size)
        try:
            phones, cmn = decode_with_cmn(decoder, pcm, cmn)
            answer = {"id": request, "phones": [list(p) for p in phones], "cmn": cmn}
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who falls back
            answer = {"id": request, "error": f"{type(exc).__name__}: {exc}"}
        stdout.write(json.dumps(answer).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    _serve()
