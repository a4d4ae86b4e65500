"""The driving (reference) video for FOMM: decode, resample to the output fps, crop the face, loop.

FOMM transfers the motion of a driving face video onto the portrait, so the clip must be decoded to
RGB frames at the render's fps, cropped to the 256x256 face window the networks were trained on
(VoxCeleb crops: the head fills most of the frame), and stretched to the audio's length.

Decoding streams: only the frames the output timeline picks are converted and cropped, and each distinct
source frame is kept once, so memory is (distinct frames used x 256 x 256 x 3) whatever the source
resolution or the gaps between timestamps. FFmpeg's `max_pixels` guards every decoder (including the
stream probe at open), so a frame over the pixel cap is refused before it is allocated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import AvatarError
from ...face.blend import Box

FACE_SIZE = 256
BoxFn = Callable[[np.ndarray], "Box | None"]  # a face box (face kit `Box`: left, top, right, bottom) in a frame


@dataclass(frozen=True)
class DrivingLimits:
    """Caps on a driving video; over any of them is `input_too_large`."""

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 3840 * 2160  # per frame: 4K UHD
    max_seconds: float = 300.0
    max_frames: int = 18_000  # output frames (300 s at 60 fps)
    max_output_bytes: int = 4 * 1024 ** 3  # the decoded output array (uncropped decoding only gets near it)

    @classmethod
    def from_settings(cls, settings) -> DrivingLimits:
        """The caps a request's driving video gets: MAX_VIDEO_BYTES, and no longer than the longest audio."""
        return cls(max_bytes=settings.max_video_bytes, max_seconds=max(settings.max_audio_seconds, 1.0))


@dataclass
class DrivingClip:
    """RGB frames on the output timeline: output frame i shows `unique[index[i]]`, the source at time i / fps.

    Only distinct source frames are stored: a long pause between two timestamps repeats an index, not a
    frame, so memory follows the source's frames, never the output length."""

    unique: np.ndarray  # (U, H, W, 3) uint8: the source frames the timeline uses; H = W = size when cropped
    index: np.ndarray  # (N,) int64 into `unique`, one per output frame
    fps: float
    source_fps: float | None  # the stream's average frame rate, when the container states one
    source_size: tuple[int, int]  # (width, height) of the decoded video, after its rotation metadata
    box: Box | None  # the square crop window in source pixels (None: uncropped)

    @property
    def frames(self) -> np.ndarray:
        """(N, H, W, 3): every output frame (a copy: for short clips and tests)."""
        return self.unique[self.index]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def duration_s(self) -> float:
        return len(self.index) / self.fps


def centre_box(frame_hw: tuple[int, int]) -> Box:
    """The largest centred square: the crop used when no box function is given."""
    h, w = frame_hw
    side = min(h, w)
    return Box.square((w - side) // 2, (h - side) // 2, side)


def crop_square(frame: np.ndarray, box: Box, size: int = FACE_SIZE) -> np.ndarray:
    """Cut the square `box` out of an RGB frame (edge-replicating outside it) and resize to size x size.

    A deliberate twin of `face.blend.extract_square`: this crop enlarges with linear filtering (the driving
    clip's fixtures were made so), the portrait crop with cubic filtering."""
    import cv2

    left, top, right, bottom = box
    h, w = frame.shape[:2]
    pad = max(0, -left, -top, right - w, bottom - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
    patch = frame[top:bottom, left:right]
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(patch, (size, size), interpolation=interp))


class _NearestResampler:
    """Streams (time, frame) pairs in presentation order and picks, for every output time i / fps,
    the frame whose timestamp is nearest (ties go to the earlier frame); at most `limit` output frames."""

    def __init__(self, fps: float, convert: Callable[[object], np.ndarray], limit: int):
        self.fps = fps
        self.convert = convert
        self.limit = limit
        self.next_index = 0
        self.prev: tuple[float, object] | None = None
        self._cache: tuple[object, int] | None = None  # (frame, its index in unique): a repeat is not re-cropped
        self.unique: list[np.ndarray] = []
        self.out: list[int] = []

    @property
    def full(self) -> bool:
        return len(self.out) >= self.limit

    def _emit(self, frame) -> None:
        if self._cache is None or self._cache[0] is not frame:
            self.unique.append(self.convert(frame))
            self._cache = (frame, len(self.unique) - 1)
        self.out.append(self._cache[1])

    def push(self, t: float, frame) -> None:
        if self.prev is not None and t < self.prev[0]:
            t = self.prev[0]  # a broken, non-monotonic timestamp: keep the order we were given
        while self.next_index / self.fps <= t and not self.full:
            target = self.next_index / self.fps
            if self.prev is not None and target - self.prev[0] <= t - target:
                self._emit(self.prev[1])
            else:
                self._emit(frame)
            self.next_index += 1
        self.prev = (t, frame)

    def finish(self, end: float) -> None:
        """Fill the output times before `end` (the end of the last frame's display) with the last frame."""
        if self.prev is None:
            return
        while (self.next_index / self.fps < end - 1e-9 or not self.out) and not self.full:
            self._emit(self.prev[1])
            self.next_index += 1


def _open_video(data: bytes, limits: DrivingLimits):
    """The container, with FFmpeg's own `max_pixels` on every decoder (also the one that probes the stream at
    open): a frame over the cap is refused before its pixels are allocated, whatever the header says."""
    import av

    cap = {"max_pixels": str(limits.max_pixels)}
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=cap)
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise AvatarError("unsupported_media",
                          f"the driving video could not be opened as a video file ({exc})") from None


def _video_stream(container, limits: DrivingLimits):
    """The first video stream, checked against the caps from its metadata (before any frame is decoded)."""
    import av

    if not container.streams.video:
        raise AvatarError("unsupported_media", "the driving video has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.options = {"max_pixels": str(limits.max_pixels)}
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    if not width or not height:  # the probe at open refused the first frame (max_pixels) or found no size
        raise AvatarError("input_too_large", f"the driving video's frame size is unknown or over the "
                                             f"{limits.max_pixels}-pixel limit")
    _check_pixels(width, height, limits)
    if container.duration and container.duration / av.time_base > limits.max_seconds + 1:
        raise AvatarError("input_too_large", f"the driving video lasts {container.duration / av.time_base:.1f} s; "
                                             f"the limit is {limits.max_seconds:g} s")
    return stream


def check_driving_video(data: bytes, limits: DrivingLimits) -> None:
    """Open the driving video and check its metadata (a video stream, pixels, duration) without decoding a
    frame: the pipeline calls this while decoding inputs, so a bad file fails before any engine work."""
    if not data:
        raise AvatarError("unsupported_media", "the driving video is empty")
    if len(data) > limits.max_bytes:
        raise AvatarError("input_too_large", f"the driving video is {len(data)} bytes; the limit is {limits.max_bytes}")
    with _open_video(data, limits) as container:
        _video_stream(container, limits)


def _upright(frame) -> np.ndarray:
    """The frame as RGB, turned as its rotation metadata says (counter-clockwise degrees)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _decode_into(container, stream, resampler: _NearestResampler, limits: DrivingLimits, rate: float | None):
    """Push every decoded frame into `resampler` until it is full; (frames decoded, last timestamp)."""
    import av

    t0, last_t, count = None, 0.0, 0
    try:
        for frame in container.decode(stream):
            _check_pixels(frame.width, frame.height, limits)
            t = frame.time if frame.time is not None else count / (rate or resampler.fps)
            t0 = t if t0 is None else t0
            t -= t0
            if t > limits.max_seconds:
                raise AvatarError("input_too_large", f"the driving video lasts over {limits.max_seconds:g} s")
            resampler.push(t, frame)
            last_t, count = max(last_t, t), count + 1
            _check_output(resampler, limits)
            if resampler.full:
                break
    except av.ArgumentError:  # EINVAL: FFmpeg refused a frame size (over max_pixels, or invalid)
        raise AvatarError("input_too_large", f"a frame of the driving video is over the {limits.max_pixels}-pixel "
                                             "limit (or has an invalid size)") from None
    except av.FFmpegError as exc:
        raise AvatarError("unsupported_media", f"the driving video is corrupt or truncated ({exc})") from None
    return count, last_t


def decode_driving_video(
    data: bytes,
    fps: float,
    *,
    size: int | None = FACE_SIZE,
    box_fn: BoxFn | None = None,
    limits: DrivingLimits = DrivingLimits(),
    stop_after: int | None = None,
) -> DrivingClip:
    """Decode a driving video (any container/codec PyAV reads: MP4, WebM, MOV, MKV...) onto an `fps` timeline.

    Frame i of the result is the source frame nearest to time i / fps (timestamps relative to the first
    frame); the clip lasts until the last source frame's display ends. Rotation metadata is applied. With
    `size` set, every frame is cropped to one fixed square window and resized to size x size:
    `box_fn(first_rgb_frame)` gives the window (e.g. a face box from the face kit; made square around its
    centre), None or no `box_fn` takes the centred square. One window for the whole clip keeps the head's
    motion in the frames (a per-frame face box would cancel it). `size=None` keeps full frames.
    `stop_after` ends decoding once that many output frames exist (a driving video longer than the audio is
    not decoded to its end, and a timestamp gap never yields more frames than the audio needs).

    Raises AvatarError `unsupported_media` (not a video, no video stream, corrupt/truncated, no frames)
    or `input_too_large` (bytes, pixels per frame, duration or frame count over `limits`).
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    check_driving_video(data, limits)
    with _open_video(data, limits) as container:
        stream = _video_stream(container, limits)
        rate = float(stream.average_rate) if stream.average_rate else None
        state: dict = {"box": None, "size": None}

        def convert(frame) -> np.ndarray:
            rgb = _upright(frame)
            state["size"] = (rgb.shape[1], rgb.shape[0])
            if size is None:
                return rgb
            if state["box"] is None:
                found = box_fn(rgb) if box_fn is not None else None
                # the face's square may leave the frame: `crop_square` pads by repeating the edge, so the
                # face is not shifted off-centre at a border
                state["box"] = Box(*found).squared() if found is not None else centre_box(rgb.shape[:2])
            return crop_square(rgb, state["box"], size)

        limit = stop_after if stop_after is not None else limits.max_frames + 1
        resampler = _NearestResampler(fps, convert, limit)
        count, last_t = _decode_into(container, stream, resampler, limits, rate)
        if count == 0:
            raise AvatarError("unsupported_media", "the driving video has no decodable frames")
        frame_s = 1.0 / rate if rate else (last_t / (count - 1) if count > 1 else 1.0 / fps)
        resampler.finish(min(last_t + frame_s, limits.max_seconds))
        _check_output(resampler, limits)
    return DrivingClip(unique=np.stack(resampler.unique), index=np.asarray(resampler.out, dtype=np.int64),
                       fps=float(fps), source_fps=rate, source_size=state["size"], box=state["box"])


def _check_pixels(width: int, height: int, limits: DrivingLimits) -> None:
    if width * height > limits.max_pixels:
        raise AvatarError("input_too_large",
                          f"the driving video is {width}x{height}; the limit is {limits.max_pixels} pixels per frame")


def _check_output(resampler: _NearestResampler, limits: DrivingLimits) -> None:
    if len(resampler.out) > limits.max_frames:
        raise AvatarError("input_too_large", f"the driving video gives over {limits.max_frames} frames at this fps")
    if resampler.unique and len(resampler.unique) * resampler.unique[0].nbytes > limits.max_output_bytes:
        raise AvatarError("input_too_large",
                          f"the decoded driving video would exceed {limits.max_output_bytes} bytes; "
                          "crop it or lower the fps")


def pingpong_indices(length: int, n: int) -> np.ndarray:
    """n indices into a clip of `length` frames: 0, 1, ..., L-1, L-2, ..., 1, 0, 1, ... (no jump)."""
    if length <= 0:
        raise ValueError("cannot loop an empty clip")
    if length == 1:
        return np.zeros(n, dtype=np.int64)
    period = 2 * (length - 1)
    phase = np.arange(n, dtype=np.int64) % period
    return np.where(phase < length, phase, period - phase)
