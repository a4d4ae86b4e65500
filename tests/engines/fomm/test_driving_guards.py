"""Issue #22 item 8: a driving video's pixel cap holds before a frame is decoded, a timestamp gap does not
build a huge array, and rotation metadata is honoured."""

from __future__ import annotations

import io
import resource

import av
import numpy as np
import pytest
from PIL import Image

from avatar_engine.engines.fomm.driving import DrivingLimits, check_driving_video, decode_driving_video
from avatar_engine.errors import AvatarError


def _png_mov_with_a_lying_header(side: int) -> bytes:
    """A MOV whose track header says 64x64 while its one PNG frame is side x side."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as out:
        stream = out.add_stream("png", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "rgb24"
        time_base = next(iter(stream.encode(av.VideoFrame(64, 64, "rgb24")))).time_base
        png = io.BytesIO()
        Image.new("RGB", (side, side)).save(png, "PNG")
        packet = av.Packet(png.getvalue())
        packet.pts = packet.dts = 0
        packet.time_base, packet.stream, packet.is_keyframe = time_base, stream, True
        out.mux(packet)
    return buf.getvalue()


def test_pixel_cap_holds_before_a_frame_is_decoded():
    data = _png_mov_with_a_lying_header(4000)  # 48 MB of RGB if decoded
    limits = DrivingLimits(max_pixels=1000 * 1000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for call in (lambda: check_driving_video(data, limits), lambda: decode_driving_video(data, 25, limits=limits)):
        with pytest.raises(AvatarError) as err:
            call()
        assert err.value.code == "input_too_large", err.value.message
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 40, grown_mb


def _two_frames_apart(gap_s: float, fps: int = 60) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.time_base = stream.time_base = av.time_base and __import__("fractions").Fraction(1, 1000)
        for i, pts in enumerate((0, int(gap_s * 1000))):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 60 + 120 * i, np.uint8), format="rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def test_a_timestamp_gap_keeps_two_frames_not_thousands():
    clip = decode_driving_video(_two_frames_apart(299.0), 60, size=None, stop_after=17_940)
    assert len(clip) == 17_940
    assert len(clip.unique) == 2 and clip.unique.nbytes < 64 * 64 * 3 * 2 + 1
    assert clip.index[0] == 0 and clip.index[-1] == 1
    short = decode_driving_video(_two_frames_apart(299.0), 60, size=None, stop_after=100)
    assert len(short) == 100 and len(short.unique) == 1  # bounded by the audio: the second frame is never used


def test_rotation_metadata_is_applied():
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :16] = 255  # a white band on the left
        for _ in range(2):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    clip = decode_driving_video(buf.getvalue(), 10, size=None)
    assert clip.source_size == (32, 64) and clip.unique.shape[1:] == (64, 32, 3)
    frame = clip.frames[0].mean(axis=2)
    assert frame[-16:].mean() > 200 and frame[:32].mean() < 50  # left band turned CCW: now at the bottom
