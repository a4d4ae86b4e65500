"""Live-session helpers for tests and the bench: a server on a free port, speech sent at real time."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import wave
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar_engine.settings import Settings
from tests.support.media import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(settings: Settings | None = None, *, warm: bool = True):
    """Yields (base http URL, the app's LiveServer); stops the server afterwards."""
    import uvicorn

    from avatar_engine.live.server import create_app, max_ws_message

    settings = settings or Settings()
    app = create_app(settings, warm=warm)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            ws_max_size=max_ws_message(settings), ws_ping_interval=5.0, ws_ping_timeout=5.0)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app.state.live
    finally:
        server.should_exit = True
        thread.join(10)


# -- speech in bursts, streamed at real time, and what came back ---------------------------------------

ONSET_DB, QUIET_DB = -40.0, -50.0


def hop_levels(pcm: np.ndarray, rate: int) -> np.ndarray:
    """dBFS per 10 ms hop."""
    hop = rate // 100
    n = len(pcm) // hop
    x = pcm[:n * hop].astype(np.float64).reshape(n, hop) / 32768.0
    return 10 * np.log10((x ** 2).mean(axis=1) + 1e-12)


def speech_bursts(bursts: int = 6, rate: int = 16000, gap_s: float = 0.7, burst_s: float = 0.7):
    """int16 mono speech pieces from assets/speech_16k.wav with silence between: (pcm, onset sample indices,
    a mask of the samples inside bursts)."""
    from scipy.signal import resample_poly

    with wave.open(str(REPO / "assets" / "speech_16k.wav")) as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
    if rate != 16000:
        speech = resample_poly(speech, rate // 8000, 2).astype(np.float32)
    levels = hop_levels(speech.astype(np.int16), rate)
    starts = [i for i in range(1, len(levels)) if levels[i] > ONSET_DB and levels[i - 1] <= ONSET_DB]
    hop, piece = rate // 100, int(burst_s * rate)
    parts, onsets, pos = [np.zeros(int(0.5 * rate), np.float32)], [], int(0.5 * rate)
    for k in range(bursts):
        begin = starts[(k * 3) % len(starts)] * hop
        chunk = speech[begin:begin + piece]
        parts += [chunk, np.zeros(int(gap_s * rate), np.float32)]
        onsets.append(pos)
        pos += len(chunk) + int(gap_s * rate)
    pcm = np.concatenate(parts).astype(np.int16)
    inside = np.zeros(len(pcm), bool)
    for onset in onsets:
        inside[onset:onset + piece] = True
    return pcm, onsets, inside


@dataclass
class StreamRun:
    ready: dict
    rate: int
    fps: int
    sent: list[float]  # perf_counter of each chunk's send
    chunk: int  # samples per chunk
    offsets: list[int]  # per chunk: how many samples the server had received before it
    received: list[tuple[float, object]] = field(default_factory=list)  # (perf_counter, Fragment | dict)
    close_code: int | None = None

    @property
    def video(self) -> bytes:
        from avatar_engine.clients.live import Fragment

        return b"".join(e.data for _, e in self.received if isinstance(e, Fragment))

    def messages(self, kind: str) -> list[dict]:
        return [e for _, e in self.received if isinstance(e, dict) and e.get("type") == kind]

    def onset_frame(self, sample: int) -> int | None:
        """The stream frame that shows client sample `sample` (from the `scheduled` events)."""
        runs = [e for e in self.messages("scheduled") if e["sample"] <= sample]
        if not runs:
            return None
        run = runs[-1]
        stream_sample = round(run["frame"] * self.rate / self.fps) + sample - run["sample"]
        if stream_sample >= round((run["frame"] + 1) * self.rate / self.fps) + 60 * self.rate:
            return None
        return int(stream_sample * self.fps // self.rate)

    def latencies(self, onsets: list[int]) -> list[float]:
        """Seconds from sending the chunk holding each onset to receiving the fragment of its frame."""
        from avatar_engine.clients.live import Fragment

        out = []
        for onset in onsets:
            k = onset // self.chunk
            frame = self.onset_frame(self.offsets[k] + onset - k * self.chunk)
            arrivals = [t for t, e in self.received if isinstance(e, Fragment) and frame in e.frames]
            if frame is not None and arrivals:
                out.append(arrivals[0] - self.sent[onset // self.chunk])
        return out


def stream_speech(url: str, pcm: np.ndarray, *, rate: int = 16000, chunk_ms: int = 40, send: np.ndarray | None = None,
                  image: Path = REPO / "assets" / "astronaut_512.png", token: str | None = None,
                  **start) -> StreamRun:
    """Send `pcm` in chunks at real time (with a `send` mask, only chunks with a sample in it: speech
    bursts with nothing between, as a TTS backend sends), then `end`; collect what the server sends."""
    from avatar_engine.clients.live import LiveSession

    session = LiveSession.connect(url.replace("http", "ws", 1) + "/live", image_path=image, token=token,
                                  sample_rate=rate, **start)
    chunk = rate * chunk_ms // 1000
    run = StreamRun(session.ready, rate, session.fps, [], chunk, [])

    received = [0]

    def feed() -> None:
        t0 = time.perf_counter()
        for k in range(0, len(pcm), chunk):
            time.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
            run.sent.append(time.perf_counter())
            run.offsets.append(received[0])
            piece = pcm[k:k + chunk]
            if send is None or send[k:k + chunk].any():
                session.send_pcm(piece)
                received[0] += len(piece)
        session.end()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    for event in session:
        run.received.append((time.perf_counter(), event))
    run.close_code = session.close_code
    feeder.join(5)
    return run


def mouth_activity(video: bytes, box: list[int]) -> np.ndarray:
    """Per decoded frame: mean absolute difference of the mouth box from the first frame."""
    import io

    import av

    with av.open(io.BytesIO(video)) as container:
        frames = [f.to_ndarray(format="gray").astype(np.float32) for f in container.decode(video=0)]
    x0, y0, x1, y1 = box
    rest = frames[0][y0:y1, x0:x1]
    return np.array([np.abs(f[y0:y1, x0:x1] - rest).mean() for f in frames])
