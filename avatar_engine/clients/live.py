"""`LiveSession`: a Python client of `WS /live` for voice-agent backends (docs/LIVE.md).

    with LiveSession.connect("ws://host:8000/live", image_path="face.png", token=...) as live:
        live.send_pcm(chunk)                   # s16le mono at live.sample_rate, any chunk size
        live.say("Hello!")                     # the server's embedded voice
        for event in live:                     # Fragment (fMP4 bytes) or a JSON message (dict)
            ...

Sends are thread-safe (one thread may stream audio while another reads). Imports nothing of the
server: only the error type.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AvatarError


def fragment_tracks(data: bytes) -> list[tuple[int, int, int]]:
    """(track id, first decode time, sample count) of every `traf` in the `moof` boxes of `data`."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"moof":
            inner = pos + 8
            while inner + 8 <= pos + size:
                isize, ikind = struct.unpack(">I4s", data[inner:inner + 8])
                if ikind == b"traf":
                    out.append(_traf(data[inner + 8:inner + isize]))
                inner += max(isize, 8)
        pos += max(size, 8)
    return out


def _traf(body: bytes) -> tuple[int, int, int]:
    track = time = count = pos = 0
    while pos + 8 <= len(body):
        size, kind = struct.unpack(">I4s", body[pos:pos + 8])
        if kind == b"tfhd":
            track = struct.unpack(">I", body[pos + 12:pos + 16])[0]
        elif kind == b"tfdt":
            wide = body[pos + 8] == 1
            time = struct.unpack(">Q" if wide else ">I", body[pos + 12:pos + (20 if wide else 16)])[0]
        elif kind == b"trun":
            count = struct.unpack(">I", body[pos + 12:pos + 16])[0]
        pos += max(size, 8)
    return track, time, count


@dataclass
class Fragment:
    """Binary stream data: the init segment (first) or a media fragment; `frames` = video frame indices."""

    data: bytes
    frames: range = field(default_factory=lambda: range(0))


class LiveSession:
    def __init__(self, ws, ready: dict):
        self._ws = ws
        self.ready = ready
        self.sample_rate: int = ready["sample_rate"]
        self.fps: int = ready["fps"]
        self.mime: str = ready["mime"]
        self._frame_ticks = int(ready.get("video_timescale", self.fps * 1000)) // self.fps
        self._send_lock = threading.Lock()
        self.close_code: int | None = None

    @classmethod
    def connect(cls, url: str, *, image_path: str | Path | None = None, image_b64: str | None = None,
                image_url: str | None = None, avatar_id: str | None = None, token: str | None = None,
                headers: dict | None = None, open_timeout: float = 60.0, **options) -> LiveSession:
        """Open a session; `options` are the other `start` fields (size, fps, sample_rate, seed, language, ...).
        `token` (LIVE_TOKEN) goes in the Authorization header; behind a gateway that needs its own key
        there (a Runpod endpoint: `headers={"Authorization": "Bearer <RUNPOD_API_KEY>"}`) put it in the
        URL instead (`...?token=`). Raises AvatarError with the server's code when the session is refused."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        if image_path is not None:
            image_b64 = base64.b64encode(Path(image_path).read_bytes()).decode()
        start = {"type": "start", **{k: v for k, v in (("image_b64", image_b64), ("image_url", image_url),
                                                      ("avatar_id", avatar_id)) if v is not None}, **options}
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})} or None
        kwargs = dict(additional_headers=headers, max_size=None, open_timeout=open_timeout)
        try:
            ws = connect(url, legacy=True, **kwargs)  # websockets >= 17.1: the connection itself, no warning
        except TypeError:
            ws = connect(url, **kwargs)
        try:
            ws.send(json.dumps(start))
        except ConnectionClosed:
            pass  # refused before the start message (token, cap): the reason is already queued
        try:
            reply = json.loads(ws.recv(timeout=open_timeout))
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            ws.close()
            raise AvatarError("internal", f"the live server closed the session before it was ready: {exc}") from None
        if reply.get("type") != "ready":
            ws.close()
            raise AvatarError(reply.get("code", "internal"), reply.get("message", str(reply)))
        return cls(ws, reply)

    def _send(self, message) -> None:
        with self._send_lock:
            self._ws.send(message)

    def send_pcm(self, pcm) -> None:
        """Speech samples: bytes (s16le) or an int16 array, mono at `sample_rate`."""
        self._send(pcm if isinstance(pcm, (bytes, bytearray)) else pcm.astype("<i2").tobytes())

    def say(self, text: str) -> None:
        self._send(json.dumps({"type": "text", "text": text}))

    def interrupt(self) -> None:
        self._send(json.dumps({"type": "interrupt"}))

    def end(self) -> None:
        """Speak what is queued, then the server sends `ended` and closes."""
        self._send(json.dumps({"type": "end"}))

    def recv(self, timeout: float | None = None) -> Fragment | dict | None:
        """The next event; None once the session is closed (`close_code` says how)."""
        from websockets.exceptions import ConnectionClosed

        try:
            message = self._ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else 1006
            return None
        if isinstance(message, str):
            return json.loads(message)
        video = [(t, n) for track, t, n in fragment_tracks(message) if track == 1]
        frames = range(video[0][0] // self._frame_ticks, video[0][0] // self._frame_ticks + video[0][1]) \
            if video else range(0)
        return Fragment(message, frames)

    def __iter__(self):
        while (event := self.recv()) is not None:
            yield event

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
