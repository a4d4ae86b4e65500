"""The stream's speech queue: runs, jitter margin, underruns, and the delay that must not creep up."""

from types import SimpleNamespace

import numpy as np

from avatar_engine.live.stream import LiveStream

RATE, FPS, NEED = 16000, 25, 640


def _stream(jitter_s: float = 0.04) -> LiveStream:
    avatar = SimpleNamespace(render=lambda mouth, blink, pose: np.zeros((8, 8, 3), np.uint8))
    encoder = SimpleNamespace(rate=RATE, fps=FPS, encode=lambda rgb, pcm: b"")
    return LiveStream(avatar, encoder, jitter_s=jitter_s)


def _chunk(voiced: bool) -> np.ndarray:
    t = np.arange(NEED) / RATE
    return (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32) if voiced else np.zeros(NEED, np.float32)


def test_a_run_starts_after_the_jitter_margin_and_reports_where():
    stream = _stream()
    stream.push(_chunk(True))
    stream.next_fragment()
    assert stream.speech_frames == 0  # one frame queued: waiting for the margin
    stream.push(_chunk(True))
    stream.next_fragment()
    assert stream.speech_frames == 1
    assert list(stream.events) == [{"type": "scheduled", "sample": 0, "frame": 1, "t": 0.04}]


def test_late_chunks_do_not_leave_the_stream_delayed_for_good():
    """Chunks arrive one per tick (a microphone); chunks 10 and 11 arrive with 12, later than the jitter
    margin. The silent frame that fills the hole delays all later speech; the next silence is skipped
    until the delay is back to normal."""
    stream = _stream()
    voiced = [k < 20 or k >= 40 for k in range(60)]
    depth = []
    for tick in range(60):
        if tick == 12:
            stream.push(_chunk(voiced[10]))
            stream.push(_chunk(voiced[11]))
        if tick not in (10, 11):
            stream.push(_chunk(voiced[tick]))
        stream.next_fragment()
        depth.append(stream.queued_s)
    before, after = depth[5], depth[-1]
    assert max(depth[12:20]) > before  # the underrun pushed the speech back...
    assert after <= before + 1e-9  # ...and the silence between bursts took it back
    assert 0 < stream.skipped_s <= 0.08
    assert stream.events[-1]["type"] == "scheduled"  # the new mapping of client samples to stream time


def test_interrupt_drops_what_is_queued():
    stream = _stream()
    for _ in range(50):
        stream.push(_chunk(True))
    stream.next_fragment()
    assert abs(stream.interrupt() - 49 * NEED / RATE) < 1e-9
    assert stream.queued_s == 0 and not stream.pending_speech
