"""Live encoding: each rendered frame and its audio become one fMP4 fragment the moment they exist.

H.264 comes from libx264 with `tune=zerolatency` (no B-frames, no look-ahead: one packet per frame,
out of the same call), AAC from FFmpeg's encoder at the session's sample rate. The AAC encoder holds
two frames (2048 samples) back, so a fragment carries the audio packets finished so far; audio and
video share one clock (sample n of the session plays at n / rate, frame i at i / fps).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from ..errors import AvatarError
from .fmp4 import Sample, TrackRun, fragment, init_segment, split_annexb, to_avcc

_AAC_FRAME = 1024
VIDEO_TRACK, AUDIO_TRACK = 1, 2


def _video_codec(width: int, height: int, fps: int) -> av.CodecContext:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, fps), Fraction(fps)
    ctx.gop_size = 2 * fps  # a keyframe every 2 s: a player that lost a fragment recovers
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "crf": "23",
                   "maxrate": "2000k", "bufsize": "1000k", "x264-params": f"keyint={2 * fps}:scenecut=0"}
    ctx.open()
    return ctx


def _audio_codec(rate: int) -> av.CodecContext:
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, "mono", "fltp"
    ctx.bit_rate = 64_000 if rate <= 16000 else 96_000
    ctx.time_base = Fraction(1, rate)
    ctx.open()
    return ctx


class LiveEncoder:
    """`encode(rgb, pcm)` -> the fragment for that frame; the first call also makes `init` and `mime`."""

    def __init__(self, width: int, height: int, fps: int, rate: int):
        self.width, self.height, self.fps, self.rate = width, height, fps, rate
        try:
            self._video = _video_codec(width, height, fps)
            self._audio = _audio_codec(rate)
        except av.FFmpegError as exc:
            raise AvatarError("engine_unavailable", f"the live encoder does not open: {exc}") from None
        self.video_timescale = fps * 1000
        self.init: bytes | None = None
        self.mime: str | None = None
        self.frames = 0
        self._sequence = 0
        self._audio_in = 0  # samples handed to the AAC encoder
        self._fifo = np.zeros(0, np.float32)

    def encode(self, rgb: np.ndarray, pcm: np.ndarray) -> bytes:
        """One RGB frame and the float32 mono samples shown with it -> one `moof`+`mdat`."""
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = self.frames
        packets = self._video.encode(frame)
        video = [self._video_sample(p) for p in packets]
        if self.init is None:
            self._make_init(packets[0])
        audio = self._audio_packets(pcm)
        runs = [TrackRun(VIDEO_TRACK, self.frames * 1000, video)]
        if audio:
            runs.append(TrackRun(AUDIO_TRACK, audio[0][0], [s for _, s in audio]))
        self.frames += 1
        self._sequence += 1
        return fragment(self._sequence, runs)

    def _video_sample(self, packet: av.Packet) -> Sample:
        return Sample(to_avcc(split_annexb(bytes(packet))), 1000, bool(packet.is_keyframe))

    def _make_init(self, first: av.Packet) -> None:
        units = split_annexb(bytes(first))
        sps = next((u for u in units if u[0] & 0x1F == 7), None)
        pps = next((u for u in units if u[0] & 0x1F == 8), None)
        if sps is None or pps is None:
            raise AvatarError("internal", "the H.264 encoder gave no parameter sets")
        self.init = init_segment(width=self.width, height=self.height, video_timescale=self.video_timescale,
                                 sps=sps, pps=pps, audio_rate=self.rate, audio_channels=1,
                                 audio_config=bytes(self._audio.extradata or b""))
        self.mime = f'video/mp4; codecs="avc1.{sps[1]:02X}{sps[2]:02X}{sps[3]:02X}, mp4a.40.2"'

    def _audio_packets(self, pcm: np.ndarray | None) -> list[tuple[int, Sample]]:
        """Feed whole AAC frames; return (pts, sample) of the packets that came out, priming dropped."""
        if pcm is not None and pcm.size:
            self._fifo = np.concatenate([self._fifo, pcm.astype(np.float32, copy=False)])
        out = []
        while self._fifo.size >= _AAC_FRAME or (pcm is None and self._fifo.size):
            block = self._fifo[:_AAC_FRAME]
            block = np.pad(block, (0, _AAC_FRAME - block.size))
            self._fifo = self._fifo[_AAC_FRAME:]
            frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = self.rate, self._audio_in, Fraction(1, self.rate)
            self._audio_in += _AAC_FRAME
            out += self._audio.encode(frame)
        if pcm is None:
            out += self._audio.encode(None)
        # the first packet (pts -1024) is the encoder's priming: dropping it starts audio at 0 like video
        return [(int(p.pts), Sample(bytes(p), _AAC_FRAME)) for p in out if p.pts is not None and p.pts >= 0]

    def flush(self) -> bytes:
        """The audio still inside the AAC encoder, as a last fragment (b"" when there is none)."""
        audio = self._audio_packets(None)
        if not audio:
            return b""
        self._sequence += 1
        return fragment(self._sequence, [TrackRun(AUDIO_TRACK, audio[0][0], [s for _, s in audio])])
