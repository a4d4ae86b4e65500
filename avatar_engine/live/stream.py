"""One live stream's timeline: received speech waits in a queue, each frame takes its share of it.

Stream time runs at the frame clock: frame i shows [i/fps, (i+1)/fps) and carries exactly those
samples of audio. Speech that arrives is queued; a run of speech starts at the next frame once a
frame's worth plus a small jitter margin is queued (`LIVE_JITTER_MS`), then every frame takes one
frame of it. When the queue runs dry the frame is silent and the avatar idles. A `scheduled` event
tells the client where each run starts: its sample `sample` plays at stream second `t`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from ..errors import AvatarError
from .avatar import LiveAvatar
from .encoder import LiveEncoder
from .lips import StreamingMouth
from .motion import LiveMotion

_TAIL_WAIT_S = 0.08  # a tail shorter than a frame is played once no audio came for this long
_SILENT_PEAK = 10 ** (-45 / 20)  # a frame whose samples all stay under -45 dBFS is silence


class LiveStream:
    """Thread-safe producers (`push`, `interrupt`) and one consumer (`next_fragment`, once per tick)."""

    def __init__(self, avatar: LiveAvatar, encoder: LiveEncoder, *, seed: int = 0, still: bool = False,
                 jitter_s: float = 0.04, max_queue_s: float = 120.0):
        self.avatar, self.encoder = avatar, encoder
        self.rate, self.fps = encoder.rate, encoder.fps
        self._mouth = StreamingMouth(self.rate, self.fps)
        self._motion = LiveMotion(self.fps, seed, still)
        self._jitter = int(round(jitter_s * self.rate))
        self._max_queue = int(max_queue_s * self.rate)
        self._lock = threading.Lock()
        self._queue: deque[np.ndarray] = deque()
        self._arrivals: deque[float] = deque()  # time.monotonic() each queued piece was received
        self._chunk = 0
        self._queued = 0
        self._received = 0  # client samples received
        self._consumed = 0  # client samples taken into the stream (or dropped by interrupt)
        self._last_push = 0.0
        self._speaking = False
        self._last_rgb: np.ndarray | None = None
        self.frame = 0
        self.frames_held = 0  # frames repeated instead of rendered (back-pressure, overload)
        self.skipped_s = 0.0  # silence skipped to keep a real-time stream's delay down
        self.events: deque[dict] = deque()
        self.timings = {"render_s": 0.0, "encode_s": 0.0, "queue_s": 0.0}  # queue_s: per frame of speech
        self.speech_frames = 0

    # -- producers (event loop / executor threads) -------------------------------------------
    def push(self, pcm: np.ndarray) -> None:
        """Float32 mono samples at the session rate, spoken after what is queued."""
        with self._lock:
            if self._queued + pcm.size > self._max_queue:
                raise AvatarError("input_too_large", f"more than {self._max_queue / self.rate:.0f} s of speech is "
                                                     "waiting to be shown; send audio at about real time")
            self._queue.append(pcm)
            self._arrivals.append(time.monotonic())
            self._chunk = max(pcm.size, int(self._chunk * 0.98))  # the client's (recent largest) chunk size
            self._queued += pcm.size
            self._received += pcm.size
            self._last_push = time.monotonic()

    def interrupt(self) -> float:
        """Drop the speech not shown yet; returns its length in seconds."""
        with self._lock:
            dropped = self._queued
            self._consumed += dropped
            self._queue.clear()
            self._arrivals.clear()
            self._queued = 0
            self._speaking = False
        return dropped / self.rate

    @property
    def queued_s(self) -> float:
        return self._queued / self.rate

    # -- the consumer (one thread) -----------------------------------------------------------
    def _pop(self, n: int) -> np.ndarray:
        """Up to n samples off the head of the queue (lock held)."""
        out = np.zeros(n, np.float32)
        filled = 0
        while filled < n and self._queue:
            head = self._queue[0]
            k = min(n - filled, head.size)
            out[filled:filled + k] = head[:k]
            filled += k
            if k == head.size:
                self._queue.popleft()
                self._arrivals.popleft()
            else:
                self._queue[0] = head[k:]
        self._queued -= filled
        self._consumed += filled
        return out

    def _skip_silence(self, need: int) -> None:
        """Keep a real-time stream's delay from creeping up: an underrun (chunks later than the jitter
        margin) pushes all later speech back by a frame, so while more is queued than a run on time
        holds (but under a second: a backend that sends whole answers keeps its pauses), silent frames
        are skipped."""
        normal = need + self._jitter + self._chunk  # the most a run on time holds when a frame is taken
        if self._queued < normal or self._queued > self.rate:
            return
        head = np.concatenate(list(self._queue)[:need])[:need] if self._queue[0].size < need else self._queue[0][:need]
        if head.size == need and float(np.max(np.abs(head))) < _SILENT_PEAK:
            self._pop(need)
            self.skipped_s += need / self.rate
            self.events.append({"type": "scheduled", "sample": self._consumed, "frame": self.frame,
                                "t": round(self.frame / self.fps, 6)})

    def _take(self, need: int, flush: bool) -> np.ndarray | None:
        """This frame's speech samples (zero-padded at a run's end) or None for silence."""
        with self._lock:
            waited = time.monotonic() - self._last_push
            if not self._speaking:
                if self._queued == 0 or (self._queued < need + self._jitter and not flush and waited < _TAIL_WAIT_S):
                    return None
                self._speaking = True
                self.events.append({"type": "scheduled", "sample": self._consumed, "frame": self.frame,
                                    "t": round(self.frame / self.fps, 6)})
            elif self._queued < need and not flush and waited < _TAIL_WAIT_S:
                self._speaking = False  # underrun: a silent frame, the run restarts with a new event
                return None
            else:
                self._skip_silence(need)
            self.timings["queue_s"] += time.monotonic() - self._arrivals[0]  # how long this speech waited
            self.speech_frames += 1
            out = self._pop(need)
            if self._queued == 0:
                self._speaking = False
            return out

    def next_fragment(self, *, hold: bool = False, flush: bool = False) -> bytes:
        """Render (or, with `hold`, repeat the last picture of) the next frame and encode it with its audio."""
        i = self.frame
        need = round((i + 1) * self.rate / self.fps) - round(i * self.rate / self.fps)
        speech = self._take(need, flush)
        audio = speech if speech is not None else np.zeros(need, np.float32)
        mouth = self._mouth.step(audio)  # silence closes the mouth smoothly, never snaps it shut
        blink, pose = self._motion.step(mouth.loudness)
        t0 = time.perf_counter()
        if hold and self._last_rgb is not None:
            rgb = self._last_rgb
            self.frames_held += 1
        else:
            rgb = self._last_rgb = self.avatar.render(mouth, blink, pose)
        t1 = time.perf_counter()
        data = self.encoder.encode(rgb, audio)
        self.timings["render_s"] += t1 - t0
        self.timings["encode_s"] += time.perf_counter() - t1
        self.frame += 1
        return data

    @property
    def pending_speech(self) -> bool:
        return self._queued > 0
