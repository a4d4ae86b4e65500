"""Driving-video decoding for FOMM: clips are written here with PyAV (WebM VP8/VP9, MOV, MKV, MP4)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from avatar_engine.engines.fomm.driving import (
    DrivingLimits,
    centre_box,
    crop_square,
    decode_driving_video,
    pingpong_indices,
)
from avatar_engine.errors import AvatarError
from tests.support.driving import loop_to, square_box


def make_clip(fmt: str, codec: str, n: int = 12, fps: int = 10, w: int = 160, h: int = 120) -> bytes:
    """Frame i is a flat grey of level 10 + 20 i, so the decoded level tells which frame was picked."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 10 + 20 * i, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def levels(frames: np.ndarray) -> list[int]:
    return [int(round((f.mean() - 10) / 20)) for f in frames]


@pytest.mark.parametrize("fmt,codec", [("webm", "libvpx"), ("webm", "libvpx-vp9"), ("mov", "mpeg4"),
                                       ("matroska", "mpeg4")])
def test_nearest_frame_resampling_in_every_container(fmt, codec):
    clip = decode_driving_video(make_clip(fmt, codec), 25, size=None)
    # 12 frames at 10 fps last 1.2 s -> 30 frames at 25 fps; frame i shows source frame round(i * 10 / 25),
    # the last one (11) past its timestamp until the clip ends
    assert len(clip.frames) == 30 and clip.frames.shape[1:] == (120, 160, 3)
    assert levels(clip.frames) == [min(11, int(np.floor(i * 0.4 + 0.5))) for i in range(30)]
    assert clip.source_fps == pytest.approx(10.0) and clip.source_size == (160, 120) and clip.box is None
    assert clip.duration_s == pytest.approx(1.2)


def test_downsampling_fps_skips_frames():
    clip = decode_driving_video(make_clip("webm", "libvpx", n=12, fps=10), 5, size=None)
    assert levels(clip.frames) == [0, 2, 4, 6, 8, 10]


def test_crop_uses_one_box_from_the_first_frame():
    h, w = 120, 200
    buf = io.BytesIO()
    calls = []
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(5):
            img = np.zeros((h, w, 3), np.uint8)
            img[30:90, 120 + i:170 + i] = 255  # a white "face" drifting right, 50x60 px
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())

    def box_fn(rgb):
        calls.append(rgb.shape)
        return (120, 30, 170, 90)

    clip = decode_driving_video(buf.getvalue(), 10, box_fn=box_fn, size=64)
    assert calls == [(h, w, 3)]  # called once: a fixed window keeps the head's motion in the frames
    assert clip.box == square_box((120, 30, 170, 90)) == (115, 30, 175, 90)
    assert clip.frames.shape == (5, 64, 64, 3)
    centre = clip.frames[:, 16:48, 16:48].mean(axis=(1, 2, 3))
    assert (centre > 200).all()
    # the face drifts right inside the fixed window: its right edge column brightens over time
    assert clip.frames[-1, 32, 60:].mean() > clip.frames[0, 32, 60:].mean()
    # no box function: the centred square of the frame
    default = decode_driving_video(buf.getvalue(), 10, size=32)
    assert default.box == centre_box((h, w)) == (40, 0, 160, 120)


def test_crop_square_pads_outside_the_frame():
    frame = np.zeros((50, 50, 3), np.uint8)
    frame[:, 40:] = 200
    patch = crop_square(frame, (30, 10, 70, 50), size=20)  # 20 px beyond the right edge
    assert patch.shape == (20, 20, 3)
    assert patch[:, 10:].min() >= 199  # the edge column is repeated, not black


def test_errors_are_classified():
    clip = make_clip("webm", "libvpx")
    for bad in (b"", b"not a video at all" * 10):
        with pytest.raises(AvatarError) as err:
            decode_driving_video(bad, 25)
        assert err.value.code == "unsupported_media"
    wav = io.BytesIO()
    with av.open(wav, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(AvatarError, match="no video stream") as err:
        decode_driving_video(wav.getvalue(), 25)
    assert err.value.code == "unsupported_media"
    truncated = make_clip("mov", "mpeg4")
    with pytest.raises(AvatarError) as err:
        decode_driving_video(truncated[: len(truncated) // 2], 25)
    assert err.value.code == "unsupported_media"
    for limits, what in ((DrivingLimits(max_bytes=100), "bytes"), (DrivingLimits(max_pixels=160 * 119), "pixels"),
                         (DrivingLimits(max_frames=10), "frames"), (DrivingLimits(max_seconds=0.5), "s")):
        with pytest.raises(AvatarError, match=what) as err:
            decode_driving_video(clip, 25, limits=limits, size=None)
        assert err.value.code == "input_too_large"
    with pytest.raises(ValueError):
        decode_driving_video(clip, 0)


def test_loop_to_ping_pongs_without_a_jump():
    assert pingpong_indices(4, 11).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert pingpong_indices(1, 3).tolist() == [0, 0, 0]
    assert pingpong_indices(5, 3).tolist() == [0, 1, 2]  # longer clips are cut
    frames = np.arange(5)[:, None, None, None] * np.ones((5, 2, 2, 3), np.uint8)
    looped = loop_to(frames, 23)
    assert isinstance(looped, np.ndarray) and looped.shape == (23, 2, 2, 3)
    steps = np.abs(np.diff(looped[:, 0, 0, 0].astype(int)))
    assert steps.max() == 1  # every step moves one frame: no wrap-around jump
    assert loop_to(["a", "b", "c"], 6) == ["a", "b", "c", "b", "a", "b"]
    with pytest.raises(ValueError):
        pingpong_indices(0, 3)
