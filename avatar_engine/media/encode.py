"""In-process H.264/AAC MP4 writing with PyAV: frames stream in, memory stays flat.

The encoder is chosen once per process: `h264_nvenc` when a GPU with NVENC opens it (L4/L40S/A10/RTX),
else libx264 (CPUs, and H100/A100 which have no NVENC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from ..audio.io import AudioClip
from ..errors import AvatarError

log = logging.getLogger(__name__)

_AAC_FRAME = 1024


@dataclass(frozen=True)
class EncoderPreset:
    """Per quality mode: NVENC preset, x264 preset and rate control."""

    nvenc_preset: str
    x264_preset: str
    bitrate: int
    crf: int | None


PRESETS = {
    "real_time": EncoderPreset(nvenc_preset="p1", x264_preset="ultrafast", bitrate=2_000_000, crf=None),
    "high_quality": EncoderPreset(nvenc_preset="p7", x264_preset="slow", bitrate=6_000_000, crf=18),
}


def _nvenc_opens() -> bool:
    try:
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        frame = av.VideoFrame(256, 256, "yuv420p")
        frame.pts = 0
        ctx.encode(frame)
        ctx.encode(None)
        return True
    except Exception as exc:  # no GPU, no driver, no NVENC on this GPU (H100/A100)
        log.debug("h264_nvenc unavailable: %s", exc)
        return False


@lru_cache(maxsize=4)
def pick_encoder(preference: str = "auto") -> str:
    """`h264_nvenc` if asked for or auto and it really opens (probed once), else `libx264`."""
    if preference == "libx264":
        return "libx264"
    if _nvenc_opens():
        return "h264_nvenc"
    if preference == "h264_nvenc":
        log.warning("VIDEO_ENCODER=h264_nvenc but NVENC does not open here; using libx264")
    return "libx264"


def _reason(exc: OSError | av.FFmpegError) -> str:
    """What went wrong, without the job's temp path (callers must not learn worker paths)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


class Mp4Writer:
    """Write RGB frames and one audio clip into a browser-playable MP4 (yuv420p, +faststart).

    AAC priming (1024 samples per channel) is handled by FFmpeg's MP4 muxer as an edit list, so
    players start the audio at t=0, aligned with frame 0; tests check this by decoding the file.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, fps: int, audio: AudioClip,
                 mode: str = "real_time", encoder: str = "libx264", tee=None, keyframe_every: int | None = None):
        """`tee`: an object whose `video(packet, stream)` gets a copy of every encoded video packet after
        it is muxed here (live segmenting, avatar_engine/media/hls.py); `keyframe_every`: a fixed GOP in
        frames (segments can only start at keyframes)."""
        if width % 2 or height % 2:
            raise ValueError("yuv420p needs even frame sizes")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.encoder = encoder
        self.frames_written = 0
        self._audio = audio
        preset = PRESETS["high_quality" if mode == "high_quality" else "real_time"]
        try:
            self._container = av.open(str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"})
        except (av.FFmpegError, OSError) as exc:
            raise AvatarError("internal", f"cannot create the output file: {_reason(exc)}") from None
        self._video = self._container.add_stream(encoder, rate=fps)
        self._video.width, self._video.height = width, height
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = Fraction(1, fps)
        if encoder == "h264_nvenc":
            self._video.bit_rate = preset.bitrate
            self._video.options = {"preset": preset.nvenc_preset, "rc": "vbr", "cq": str(preset.crf or 23)}
        else:
            opts = {"preset": preset.x264_preset, "profile": "high" if preset.crf else "main"}
            if preset.crf is not None:
                opts.update(crf=str(preset.crf), maxrate=str(preset.bitrate), bufsize=str(2 * preset.bitrate))
            else:
                self._video.bit_rate = preset.bitrate
            self._video.options = opts
        if keyframe_every:
            self._video.codec_context.gop_size = keyframe_every
            if encoder != "h264_nvenc":
                opts["x264-params"] = f"keyint={keyframe_every}:min-keyint={keyframe_every}:scenecut=0"
                self._video.options = opts
        self._video.codec_context.options = dict(self._video.options)
        self._tee = tee
        self._astream = self._container.add_stream("aac", rate=audio.rate)
        self._astream.layout = "stereo" if audio.channels == 2 else "mono"
        self._astream.bit_rate = 128_000 if audio.channels == 2 else 96_000

    def write(self, rgb: np.ndarray) -> None:
        """Encode one RGB uint8 frame of exactly (height, width, 3)."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise AvatarError("internal", f"engine produced a frame of {rgb.shape}/{rgb.dtype}, "
                                          f"expected {(self.height, self.width, 3)}/uint8")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames_written
        self._mux_video(self._video.encode(frame))
        self.frames_written += 1

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except OSError as exc:  # disk full, file removed under us
            raise AvatarError("internal", f"writing the MP4 failed: {_reason(exc)}") from None

    def _mux_video(self, packets) -> None:
        if self._tee is None:
            self._mux(packets)
            return
        copies = [_copy_packet(p) for p in packets]  # muxing rescales the originals in place
        self._mux(packets)  # first: the tee's stream copies its codec parameters from this header
        for packet in copies:
            self._tee.video(packet, self._video)

    def _write_audio(self) -> None:
        samples = self._audio.samples
        layout = self._astream.layout.name
        for start in range(0, samples.shape[1], _AAC_FRAME * 8):
            chunk = np.ascontiguousarray(samples[:, start:start + _AAC_FRAME * 8])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = self._audio.rate
            frame.pts = start
            frame.time_base = Fraction(1, self._audio.rate)
            self._mux(self._astream.encode(frame))
        self._mux(self._astream.encode(None))

    def close(self) -> None:
        """Flush video, mux the audio, finalize (faststart moves the moov atom to the front)."""
        self._mux_video(self._video.encode(None))
        self._write_audio()
        try:
            self._container.close()
        except OSError as exc:
            raise AvatarError("internal", f"finalizing the MP4 failed: {_reason(exc)}") from None

    def abort(self) -> None:
        """Close without caring about the result; the caller deletes the partial file."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass


def _copy_packet(packet: av.Packet) -> av.Packet:
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base, copy.is_keyframe = packet.pts, packet.dts, packet.time_base, packet.is_keyframe
    return copy
