"""One `WS /live` session: open the stream, then three tasks until the end or the first error.

* receive: binary PCM and JSON control messages from the client, with the size limit;
* pace: one frame per tick of the stream clock (rendered and encoded on the session's own thread),
  holding frames when the client falls behind and closing it when it stays behind;
* send: everything queued for the client, in order (the only task that writes to the socket).

A fatal error (AvatarError) is sent as a JSON `error` followed by the close code of its error code;
a client that disconnects ends all three tasks at once, and the session's slot is free again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from math import gcd

import numpy as np
from scipy.signal import resample_poly
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import AvatarError
from ..settings import Settings
from .avatar import LiveAvatar
from .encoder import LiveEncoder
from .protocol import CLOSE_NORMAL, StartMessage, close_code, error_message, parse_json
from .stream import LiveStream

log = logging.getLogger(__name__)
_END = object()  # pacer -> sender: the stream is finished


def load_avatar(start: StartMessage, settings: Settings) -> LiveAvatar:
    """The portrait of a `start` message, fitted to its size, with the face found (blocking)."""
    from ..media.fetch import load_input
    from ..media.image import decode_image, fit_image

    if start.avatar_id:
        from ..media.avatars import load_avatar_image

        data = load_avatar_image(start.avatar_id, settings)
    else:
        data = load_input(start.image_url, start.image_b64, kind="image", settings=settings).data
    source = decode_image(data, max_pixels=settings.max_image_pixels)
    image = fit_image(source, start.size)
    return LiveAvatar(image, max(source.shape[:2]) / max(image.shape[:2]))


def open_stream(start: StartMessage, settings: Settings) -> tuple[LiveStream, bytes]:
    """The stream and its first fragment (which also fixes the init segment and the MIME type)."""
    avatar = load_avatar(start, settings)
    h, w = avatar.image.shape[:2]
    encoder = LiveEncoder(w, h, start.fps, start.sample_rate)
    stream = LiveStream(avatar, encoder, seed=start.seed, still=start.still,
                        jitter_s=settings.live_jitter_ms / 1000.0)
    return stream, stream.next_fragment()


def speak_text(text: str, start: StartMessage, settings: Settings) -> np.ndarray:
    """Text spoken with the embedded voice, at the session's sample rate (blocking)."""
    from ..speech.tts import speak

    clip = speak(text, voice=start.voice, language=start.language, settings=settings)
    samples = clip.samples[0]
    if clip.rate != start.sample_rate:
        g = gcd(clip.rate, start.sample_rate)
        samples = resample_poly(samples, start.sample_rate // g, clip.rate // g)
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


class LiveSession:
    def __init__(self, ws: WebSocket, start: StartMessage, stream: LiveStream, settings: Settings):
        self.ws, self.start, self.stream, self.settings = ws, start, stream, settings
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._queued_frames = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="live-frames")
        self._ending = False
        self._carry = b""  # an odd byte of a PCM chunk, completed by the next chunk
        self.started = time.monotonic()

    async def run(self, first: bytes) -> None:
        encoder = self.stream.encoder
        ready = {"type": "ready", "mime": encoder.mime, "width": encoder.width, "height": encoder.height,
                 "fps": self.start.fps, "sample_rate": self.start.sample_rate,
                 "mouth_box": self.stream.avatar.mouth_box, "video_timescale": encoder.video_timescale,
                 "max_session_s": self.settings.live_max_session_s}
        await self.ws.send_json(ready)
        await self.ws.send_bytes(self.stream.encoder.init + first)
        tasks = [asyncio.create_task(c) for c in (self._receive(), self._pace(), self._send())]
        try:
            await self._supervise(tasks)
        except AvatarError as exc:
            await self._fail(exc)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the client is gone (a send on a closed socket raises one of these)
        except Exception:  # noqa: BLE001 - one session's bug must not reach the server
            log.exception("live session failed")
            await self._fail(AvatarError("internal", "the live session failed; the worker log has the details"))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _supervise(self, tasks: list[asyncio.Task]) -> None:
        """Until the client leaves (receive ends), the stream is sent to its end (send ends) or an error."""
        receiver, _, sender = tasks
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
                if task is receiver or task is sender:
                    return

    async def _fail(self, exc: AvatarError) -> None:
        log.info("live session closed: %s %s", exc.code, exc.message)
        try:
            await asyncio.wait_for(self.ws.send_json(error_message(exc)), 2.0)
            await asyncio.wait_for(self.ws.close(close_code(exc.code), exc.message[:120]), 2.0)
        except Exception:  # noqa: BLE001 - the client may be gone already
            pass

    # -- receive -----------------------------------------------------------------------------
    async def _receive(self) -> None:
        limit = self.settings.live_max_message_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            if len(data or b"") > limit or len((text or "").encode()) > limit:
                raise AvatarError("input_too_large", f"a message is over LIVE_MAX_MESSAGE_BYTES ({limit} bytes)")
            if self._ending:
                continue
            if data is not None:
                self._pcm(data)
            elif text is not None:
                await self._control(parse_json(text))

    def _pcm(self, data: bytes) -> None:
        data = self._carry + data
        even = len(data) - len(data) % 2
        self._carry = data[even:]
        if even:
            self.stream.push(np.frombuffer(data[:even], "<i2").astype(np.float32) / 32768.0)

    async def _control(self, message: dict) -> None:
        kind = message["type"]
        if kind == "text":
            text = message.get("text")
            if not isinstance(text, str):
                raise AvatarError("invalid_input", 'a "text" message needs a "text" string')
            try:
                samples = await asyncio.get_running_loop().run_in_executor(
                    None, speak_text, text, self.start, self.settings)
                self.stream.push(samples)
            except AvatarError as exc:  # a bad or too long text is not fatal: say so and keep the session
                self._post({**error_message(exc), "fatal": False})
        elif kind == "interrupt":
            self._post({"type": "interrupted", "dropped_s": round(self.stream.interrupt(), 3)})
        elif kind == "end":
            self._ending = True
        else:
            raise AvatarError("invalid_input", f"unknown message type {kind!r} (text, interrupt, end, or binary PCM)")

    # -- pace and send -------------------------------------------------------------------------
    def _post(self, item) -> None:
        self._outbox.put_nowait(item)

    def _check_limits(self, behind_since: float | None, now: float) -> float | None:
        """Session time limit; back-pressure: when the client started to fall behind (None if it is not)."""
        settings = self.settings
        if now - self.started > settings.live_max_session_s:
            raise AvatarError("timeout", f"the session reached LIVE_MAX_SESSION_S ({settings.live_max_session_s:g} s)")
        if self._queued_frames / self.start.fps <= settings.live_send_buffer_s:
            return None
        behind_since = behind_since or now
        if now - behind_since > settings.live_slow_close_s:
            raise AvatarError("slow_client", "the client reads the stream slower than real time")
        return behind_since

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.start.fps
        due, behind_since = loop.time() + period, None
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            behind_since = self._check_limits(behind_since, time.monotonic())
            late = now - due > 3 * period  # the CPU cannot keep up: repeat a picture to catch the clock up
            hold = behind_since is not None or late
            data = await loop.run_in_executor(self._executor, partial(
                self.stream.next_fragment, hold=hold, flush=self._ending))
            while self.stream.events:
                self._post(self.stream.events.popleft())
            self._queued_frames += 1
            self._post(data)
            if self._ending and not self.stream.pending_speech:
                self._queued_frames += 1
                self._post(await loop.run_in_executor(self._executor, self.stream.encoder.flush))
                self._post(_END)
                return
            due = due + period if now - due < 1.0 else now + period  # far behind: start the clock again

    async def _send(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is _END:
                stream = self.stream
                per_frame = {"render_ms": stream.timings["render_s"] * 1000 / max(stream.frame, 1),
                             "encode_ms": stream.timings["encode_s"] * 1000 / max(stream.frame, 1),
                             "queue_ms": stream.timings["queue_s"] * 1000 / max(stream.speech_frames, 1)}
                per_frame = {k: round(v, 2) for k, v in per_frame.items()}
                await self.ws.send_json({"type": "ended", "frames": stream.frame, "frames_held": stream.frames_held,
                                         "skipped_s": round(stream.skipped_s, 3), **per_frame})
                await self.ws.close(CLOSE_NORMAL)
                return
            if isinstance(item, bytes):
                self._queued_frames -= 1
                if item:
                    await self.ws.send_bytes(item)
            else:
                await self.ws.send_json(item)
