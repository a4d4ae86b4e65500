"""Seeded, per-frame non-speech motion: eye blinks and subtle head movement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

MAX_ROLL_DEG = 3.0


@dataclass
class HeadTrack:
    roll_deg: np.ndarray
    tx: np.ndarray  # in face heights
    ty: np.ndarray
    scale: np.ndarray  # relative, around 0


def blink_track(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure 0..1 per frame: a blink every 2-6 s, each 150-250 ms (close, hold, open)."""
    out = np.zeros(n_frames)
    times = (np.arange(n_frames) + 0.5) / fps
    t = rng.uniform(0.6, 2.0)
    end = n_frames / fps
    while t < end:
        dur = rng.uniform(0.15, 0.25)
        close, hold = 0.3 * dur, 0.25 * dur
        x = times - t
        closing = np.clip(x / close, 0, 1)
        opening = np.clip(1 - (x - close - hold) / (dur - close - hold), 0, 1)
        profile = np.where(x < close + hold, closing, opening)
        profile[(x < 0) | (x > dur)] = 0.0
        out = np.maximum(out, np.sin(profile * np.pi / 2) ** 2)
        t += dur + rng.uniform(2.0, 6.0)
    return out


def _smooth_noise(n: int, fps: float, rng: np.random.Generator, periods=(7.0, 3.7, 2.1)) -> np.ndarray:
    """Sum of slow sinusoids with random phases: never jerky, never repeating exactly, in [-1, 1]."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for i, period in enumerate(periods):
        freq = 1.0 / (period * rng.uniform(0.8, 1.25))
        out += np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) / (1.6 ** i)
    return out / sum(1 / 1.6 ** i for i in range(len(periods)))


def head_track(n_frames: int, fps: float, loudness: np.ndarray, rng: np.random.Generator, still: bool) -> HeadTrack:
    """Sway from smooth noise plus a small nod on speech onsets; all zero when `still`."""
    if still:
        zero = np.zeros(n_frames)
        return HeadTrack(zero, zero, zero, zero)
    onsets = np.clip(np.diff(gaussian_filter1d(loudness, 2.0), prepend=loudness[:1]), 0, None)
    emphasis = gaussian_filter1d(onsets, fps * 0.12)
    emphasis = emphasis / (emphasis.max() + 1e-6)
    speaking = gaussian_filter1d(loudness, fps * 0.5)
    roll = np.clip(1.6 * _smooth_noise(n_frames, fps, rng) + 0.6 * speaking * _smooth_noise(n_frames, fps, rng, (1.3, 0.9)),
                   -MAX_ROLL_DEG, MAX_ROLL_DEG)
    tx = 0.012 * _smooth_noise(n_frames, fps, rng)
    ty = 0.006 * _smooth_noise(n_frames, fps, rng) + 0.012 * emphasis
    scale = 0.006 * _smooth_noise(n_frames, fps, rng, (9.0, 4.3))
    return HeadTrack(roll, tx, ty, scale)
