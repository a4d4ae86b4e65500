"""Streaming lips and endless idle motion: causal, bounded, never frozen."""

import numpy as np

from avatar_engine.live.lips import StreamingMouth
from avatar_engine.live.motion import LiveMotion

RATE, FPS = 16000, 25
STEP = RATE // FPS


def _speech_like(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames * STEP) / RATE
    voiced = 0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_mouth_opens_on_the_onset_frame_and_closes_in_silence():
    mouth = StreamingMouth(RATE, FPS)
    audio = np.concatenate([np.zeros(10 * STEP, np.float32), _speech_like(15), np.zeros(15 * STEP, np.float32)])
    shapes = [mouth.step(audio[i * STEP:(i + 1) * STEP]) for i in range(40)]
    opening = np.array([s.open for s in shapes])
    assert opening[:10].max() == 0.0  # silence: at rest
    assert opening[10] > 0.3 and opening[11] > 0.5  # the onset frame itself already opens
    assert opening[-1] < 0.02  # closes again in silence (smoothly: no snap)
    assert np.all(np.abs(np.diff(opening[25:])) < 0.6)


def test_a_quiet_speaker_still_moves_the_mouth():
    mouth = StreamingMouth(RATE, FPS)
    quiet = 0.05 * _speech_like(30) / 0.2
    opening = [mouth.step(quiet[i * STEP:(i + 1) * STEP]).open for i in range(30)]
    assert max(opening[5:]) > 0.3


def test_idle_motion_blinks_breathes_and_never_stops():
    motion = LiveMotion(FPS, seed=3)
    steps = [motion.step(0.0) for _ in range(20 * FPS)]
    blinks = np.array([b for b, _ in steps])
    poses = np.array([p for _, p in steps])
    closed = np.flatnonzero(blinks > 0.9)
    assert len(np.unique(closed // FPS)) >= 3  # several blinks in 20 s
    assert np.abs(poses[:, 0]).max() <= 3.0  # roll within MAX_ROLL_DEG
    assert np.all(np.abs(np.diff(poses, axis=0)).max(axis=0) < [0.3, 0.003, 0.003, 0.003])  # smooth: no jumps
    for second in range(19):  # the head never holds still for a whole second
        window = poses[second * FPS:(second + 1) * FPS]
        assert np.ptp(window[:, 0]) > 0.01


def test_still_keeps_the_head_but_not_the_eyes():
    motion = LiveMotion(FPS, seed=1, still=True)
    steps = [motion.step(0.5) for _ in range(10 * FPS)]
    assert all(p == (0.0, 0.0, 0.0, 0.0) for _, p in steps)
    assert max(b for b, _ in steps) > 0.9
