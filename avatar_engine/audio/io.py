"""Speech decoding with PyAV: 16 kHz mono for analysis, and the source quality kept for the output."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from ..errors import AvatarError

ANALYSIS_RATE = 16000
_MAX_OUTPUT_RATE = 48000
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

_AUDIO_MAGIC = (
    (b"RIFF", 8, b"WAVE", "wav"),
    (b"ID3", 0, b"", "mp3"),
    (b"OggS", 0, b"", "ogg"),
    (b"fLaC", 0, b"", "flac"),
    (b"\x1a\x45\xdf\xa3", 0, b"", "webm"),
    (b"FORM", 8, b"AIF", "aiff"),
    (b"#!AMR", 0, b"", "amr"),
    (b"caff", 0, b"", "caf"),
)


@dataclass
class AudioClip:
    """Decoded speech: `analysis` drives the animation, `samples` is what the viewer hears."""

    analysis: np.ndarray  # float32 (n,), 16 kHz mono
    samples: np.ndarray  # float32 (channels, m), at `rate`
    rate: int
    duration_s: float
    # what is said when (speech/timeline.py): set for synthesized text, or from a transcript's alignment
    timeline: object | None = None

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])


def sniff_audio(data: bytes) -> str | None:
    """The container from the bytes themselves; None when it is no audio format we know."""
    for magic, offset, tag, name in _AUDIO_MAGIC:
        if data.startswith(magic) and (not tag or data[offset:offset + len(tag)] == tag):
            return name
    if data[4:8] == b"ftyp":
        return "mp4"
    if len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:
        return "aac" if (data[1] & 0x06) == 0 else "mp3"  # ADTS vs MPEG audio frame sync
    return None


def _output_rate(rate: int) -> int:
    if rate in _AAC_RATES:
        return rate
    return min((r for r in _AAC_RATES if r >= min(rate, _MAX_OUTPUT_RATE)), default=_MAX_OUTPUT_RATE)


def decode_audio(data: bytes, *, max_seconds: float, min_seconds: float) -> AudioClip:
    """Decode any common container/codec; refuse silence-length or over-long clips with clear codes."""
    if sniff_audio(data) is None:
        raise AvatarError("unsupported_media", "the audio input is not a WAV, MP3, AAC/M4A, Ogg, Opus, FLAC or WebM file")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise AvatarError("unsupported_media", f"the audio input could not be opened ({exc})") from None
    with container:
        streams = container.streams.audio
        if not streams:
            raise AvatarError("unsupported_media", "the audio input has no audio stream")
        stream = streams[0]
        if stream.codec_context is None:  # a codec tag FFmpeg has no decoder for
            raise AvatarError("unsupported_media", "the audio codec is not supported")
        src_rate = stream.codec_context.sample_rate or stream.rate
        if not src_rate:
            raise AvatarError("unsupported_media", "the audio stream has no sample rate")
        if container.duration and container.duration / av.time_base > max_seconds + 1:
            raise AvatarError(
                "input_too_large", f"audio lasts {container.duration / av.time_base:.0f} s, over the {max_seconds:.0f} s limit"
            )
        channels = min(2, stream.codec_context.channels or 1)
        out_rate = _output_rate(src_rate)
        to_output = av.AudioResampler(format="fltp", layout="stereo" if channels == 2 else "mono", rate=out_rate)
        to_analysis = av.AudioResampler(format="flt", layout="mono", rate=ANALYSIS_RATE)
        out_chunks, ana_chunks, decoded_s = [], [], 0.0
        try:
            for frame in container.decode(stream):
                decoded_s += frame.samples / float(frame.sample_rate or src_rate)
                if decoded_s > max_seconds + 1:
                    raise AvatarError("input_too_large", f"audio lasts over the {max_seconds:.0f} s limit")
                frame.pts = None  # resample by sample count; broken timestamps must not create gaps
                for f in to_output.resample(frame):
                    out_chunks.append(f.to_ndarray())
                for f in to_analysis.resample(frame):
                    ana_chunks.append(f.to_ndarray().reshape(-1))
        except AvatarError:
            raise
        except (av.FFmpegError, ValueError) as exc:
            if not out_chunks:
                raise AvatarError("unsupported_media", f"the audio input is corrupt ({exc})") from None
            # a truncated tail still yields the audio before it, as every player would play it
        for f in to_output.resample(None):
            out_chunks.append(f.to_ndarray())
        for f in to_analysis.resample(None):
            ana_chunks.append(f.to_ndarray().reshape(-1))
    if not out_chunks:
        raise AvatarError("unsupported_media", "the audio input holds no decodable audio")
    samples = np.ascontiguousarray(np.concatenate(out_chunks, axis=1), dtype=np.float32)
    duration = samples.shape[1] / out_rate
    if duration < min_seconds:
        raise AvatarError("invalid_input", f"audio lasts {duration:.2f} s; at least {min_seconds} s is needed")
    if duration > max_seconds:
        raise AvatarError("input_too_large", f"audio lasts {duration:.0f} s, over the {max_seconds:.0f} s limit")
    if not ana_chunks:
        raise AvatarError("unsupported_media", "the audio input holds no decodable audio")
    analysis = np.ascontiguousarray(np.concatenate(ana_chunks), dtype=np.float32)
    np.nan_to_num(samples, copy=False)
    np.nan_to_num(analysis, copy=False)
    return AudioClip(analysis=analysis, samples=samples, rate=out_rate, duration_s=duration)
