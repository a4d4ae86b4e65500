"""The live fMP4: an init segment plus one fragment per frame that FFmpeg decodes back, in sync."""

import io

import av
import numpy as np
import pytest

from avatar_engine.clients.live import fragment_tracks
from avatar_engine.live.encoder import LiveEncoder
from avatar_engine.live.fmp4 import split_annexb, to_avcc


def _stream(frames: int, rate: int, fps: int = 25, size: int = 64):
    enc = LiveEncoder(size, size, fps, rate)
    step = rate // fps
    parts = []
    for i in range(frames):
        rgb = np.full((size, size, 3), (i * 7) % 255, np.uint8)
        t = np.arange(i * step, (i + 1) * step) / rate
        parts.append(enc.encode(rgb, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)))
    return enc, parts, enc.flush()


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_init_and_fragments_decode_to_every_frame_and_the_audio(rate):
    enc, parts, tail = _stream(30, rate)
    data = enc.init + b"".join(parts) + tail
    with av.open(io.BytesIO(data)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        frames = [f for f in c.decode(video=0)]
    with av.open(io.BytesIO(data)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert len(frames) == 30
    assert abs(samples / rate - 30 / 25) < 2048 / rate + 1e-9  # AAC frames round the end up
    assert enc.mime.startswith('video/mp4; codecs="avc1.42') and enc.mime.endswith('mp4a.40.2"')


def test_each_fragment_holds_one_video_frame_at_its_time():
    enc, parts, _ = _stream(10, 16000)
    for i, part in enumerate(parts):
        video = [(t, n) for track, t, n in fragment_tracks(part) if track == 1]
        assert video == [(i * 1000, 1)]  # timescale fps*1000: frame i starts at i*1000
    audio = [t for part in parts for track, t, _ in fragment_tracks(part) if track == 2]
    assert audio == sorted(audio) and audio[0] == 0  # priming dropped: audio starts with video


def test_audio_and_video_start_together():
    """A click at frame 10's first sample is heard at 10/fps, where the video shows frame 10."""
    rate, fps = 48000, 25
    enc = LiveEncoder(64, 64, fps, rate)
    parts = []
    for i in range(25):
        pcm = np.zeros(rate // fps, np.float32)
        if i == 10:
            pcm[:200] = 0.9
        parts.append(enc.encode(np.zeros((64, 64, 3), np.uint8), pcm))
    data = enc.init + b"".join(parts) + enc.flush()
    with av.open(io.BytesIO(data)) as c:
        audio = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    first = int(np.argmax(np.abs(audio) > 0.3))
    assert abs(first / rate - 10 / fps) < 0.004


def test_annexb_to_avcc_keeps_slices_and_drops_parameter_sets():
    stream = b"\x00\x00\x00\x01\x67abc\x00\x00\x01\x68de\x00\x00\x01\x65slice\x00"
    units = split_annexb(stream)
    assert [u[0] & 0x1F for u in units] == [7, 8, 5]
    assert to_avcc(units) == b"\x00\x00\x00\x07\x65slice\x00"
