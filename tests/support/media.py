"""Inspect rendered MP4s by decoding them (never by trusting the writer) and make test media."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
FIXTURES = REPO / "tests" / "fixtures"  # goldens per upstream network, copied from shared/


def asset_bytes(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


def box_order(data: bytes) -> list[str]:
    """Top-level MP4 box types in file order."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        out.append(kind)
        if size < 8:
            break
        pos += size
    return out


def probe_mp4(source: str | Path | bytes) -> dict:
    """Codec, pixel format, size, decoded frame count and both streams' decoded durations."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    info = {"boxes": box_order(data)}
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        info.update(video_codec=v.codec_context.name, pix_fmt=v.codec_context.format.name,
                    width=v.codec_context.width, height=v.codec_context.height,
                    fps=float(v.average_rate), audio_codec=a.codec_context.name, audio_rate=a.codec_context.sample_rate,
                    audio_channels=a.codec_context.channels)
    with av.open(io.BytesIO(data)) as c:
        times = [f.time for f in c.decode(video=0)]
    info["frames"] = len(times)
    info["video_duration"] = (times[-1] + 1.0 / info["fps"]) if times else 0.0
    with av.open(io.BytesIO(data)) as c:
        first, samples = None, 0
        chunks = []
        for f in c.decode(audio=0):
            if first is None:
                first = f.time
            arr = f.to_ndarray()
            chunks.append(arr.reshape(arr.shape[0], -1)[0] if arr.ndim > 1 else arr)
            samples += f.samples
    info["audio_start"] = first
    info["audio_duration"] = samples / info["audio_rate"]
    info["audio"] = np.concatenate(chunks) if chunks else np.zeros(0)
    return info


def encode_audio(samples: np.ndarray, rate: int, fmt: str, codec: str, layout: str = "mono") -> bytes:
    """Write float samples (channels, n) into a container/codec with PyAV (mp3, aac, opus...)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        fmt_name = s.codec_context.codec.audio_formats[0].name if s.codec_context.codec.audio_formats else "fltp"
        arr = samples.astype(np.float32)
        planar = fmt_name.endswith("p")
        if fmt_name.startswith("s16"):
            arr = (np.clip(arr, -1, 1) * 32767).astype(np.int16)
        elif fmt_name.startswith("s32"):
            arr = (np.clip(arr, -1, 1) * 2147483647).astype(np.int32)
        if not planar:
            arr = arr.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt_name, layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return buf.getvalue()


def tone(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[None], channels, axis=0)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """PCM16 WAV (any channel count) via the standard library."""
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples.T, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()
