"""Endless non-speech motion for a live avatar: blinks, breathing, slow head sway, nods on speech onsets.

The clip engine plans whole tracks (`engines/parametric/animation.py`); a live stream has no end, so
every motion here is a function of the running time (fixed random sinusoids) or a small causal state
(blink schedule, speaking envelope): it never repeats visibly, never jumps, and idles forever.
"""

from __future__ import annotations

import math

import numpy as np

from ..engines.parametric.animation import MAX_ROLL_DEG

Pose = tuple[float, float, float, float]  # roll in degrees, tx, ty (face heights), scale (relative)


class _Sway:
    """Sum of slow sinusoids with random periods and phases, in [-1, 1]."""

    def __init__(self, rng: np.random.Generator, periods=(7.0, 3.7, 2.1)):
        self._freqs = [1.0 / (p * rng.uniform(0.8, 1.25)) for p in periods]
        self._phases = [rng.uniform(0, 2 * np.pi) for _ in periods]
        self._norm = sum(1 / 1.6 ** i for i in range(len(periods)))

    def at(self, t: float) -> float:
        return sum(math.sin(2 * math.pi * f * t + p) / 1.6 ** i
                   for i, (f, p) in enumerate(zip(self._freqs, self._phases))) / self._norm


class LiveMotion:
    """`step(loudness)` per frame -> (eyelid closure 0..1, head pose)."""

    def __init__(self, fps: int, seed: int = 0, still: bool = False):
        rng = np.random.default_rng(seed)
        self.fps, self.still, self._rng = fps, still, rng
        self._roll, self._roll_talk = _Sway(rng), _Sway(rng, (1.3, 0.9))
        self._tx, self._ty, self._scale = _Sway(rng), _Sway(rng), _Sway(rng, (9.0, 4.3))
        self._breath_period = rng.uniform(3.6, 4.6)
        self._frame = 0
        self._next_blink = rng.uniform(0.6, 2.0)
        self._blink_len = rng.uniform(0.15, 0.25)
        self._speaking = self._emphasis = self._prev_loud = 0.0

    def _blink(self, t: float) -> float:
        """Close, hold, open (same profile as the clip engine), then schedule the next in 2-6 s."""
        x, dur = t - self._next_blink, self._blink_len
        if x > dur:
            self._next_blink += dur + self._rng.uniform(2.0, 6.0)
            self._blink_len = self._rng.uniform(0.15, 0.25)
            return 0.0
        if x < 0:
            return 0.0
        close, hold = 0.3 * dur, 0.25 * dur
        profile = min(1.0, x / close) if x < close + hold else max(0.0, 1 - (x - close - hold) / (dur - close - hold))
        return math.sin(profile * math.pi / 2) ** 2

    def step(self, loudness: float) -> tuple[float, Pose]:
        t = self._frame / self.fps
        self._frame += 1
        blink = self._blink(t)
        self._speaking += (1 - math.exp(-1 / (0.5 * self.fps))) * (loudness - self._speaking)
        onset = max(0.0, loudness - self._prev_loud - 0.15)
        self._prev_loud = loudness
        self._emphasis = min(1.0, self._emphasis * math.exp(-1 / (0.15 * self.fps)) + 1.5 * onset)
        if self.still:
            return blink, (0.0, 0.0, 0.0, 0.0)
        breath = math.sin(2 * math.pi * t / self._breath_period)
        roll = 1.6 * self._roll.at(t) + 0.6 * self._speaking * self._roll_talk.at(t)
        roll = max(-MAX_ROLL_DEG, min(MAX_ROLL_DEG, roll))
        ty = 0.006 * self._ty.at(t) + 0.003 * breath + 0.012 * self._emphasis
        scale = 0.006 * self._scale.at(t) + 0.002 * breath
        return blink, (roll, 0.012 * self._tx.at(t), ty, scale)
