"""Lip shapes from speech as it arrives: loudness and spectral balance of each frame's own audio.

The whole-clip signal path (`speech/mouth.py`) normalises by the clip's loudest stretch and smooths
in both directions; a live stream knows neither the future nor the clip. Here the speech peak is a
running maximum that slowly decays, and smoothing is causal (fast attack, slower release), so frame
i's mouth needs nothing but frame i's samples: no look-ahead, any language.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..speech.features import SILENCE_DBFS

_INITIAL_PEAK_DB = -24.0  # assumed speech peak before any is heard
_PEAK_DECAY_DB = 0.5  # per second: a louder speaker's peak fades back slowly
_DYNAMIC_RANGE_DB = 32.0


@dataclass(frozen=True)
class MouthShape:
    open: float  # 0..1
    width: float  # -1..1
    round: float  # 0..1
    loudness: float  # 0..1, drives head emphasis


REST = MouthShape(0.0, 0.0, 0.0, 0.0)


def _bands(samples: np.ndarray, rate: int) -> tuple[float, float, float, float]:
    """(power, low 250-1200 Hz, high 2500-6000 Hz, voice-band share) of one frame's samples."""
    power = float(np.mean(samples.astype(np.float64) ** 2)) if samples.size else 0.0
    if samples.size < 16:
        return power, 1e-10, 1e-10, 0.0
    spec = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate)
    low = float(spec[(freqs >= 250) & (freqs < 1200)].sum()) + 1e-10
    high = float(spec[(freqs >= 2500) & (freqs < 6000)].sum()) + 1e-10
    voice = float(spec[(freqs >= 80) & (freqs < 1200)].sum())
    return power, low, high, voice / (float(spec[freqs >= 80].sum()) + 1e-10)


class StreamingMouth:
    """`step(samples)` per video frame -> its MouthShape."""

    def __init__(self, rate: int, fps: int):
        self.rate, self.fps = rate, fps
        self._peak = _INITIAL_PEAK_DB
        self._brightness_ref: float | None = None
        self._open = self._width = self._round = 0.0

    def _loudness(self, level_db: float) -> float:
        if level_db > self._peak:
            self._peak = level_db
        else:
            self._peak = max(_INITIAL_PEAK_DB - 6.0, self._peak - _PEAK_DECAY_DB / self.fps)
        if level_db <= SILENCE_DBFS:
            return 0.0
        floor = max(SILENCE_DBFS, self._peak - _DYNAMIC_RANGE_DB)
        return float(np.clip((level_db - floor) / max(self._peak - floor, 1.0), 0.0, 1.0)) ** 1.3

    def step(self, samples: np.ndarray) -> MouthShape:
        power, low, high, voiced = _bands(samples, self.rate)
        loud = self._loudness(10 * np.log10(power + 1e-12))
        brightness = 10 * np.log10(high / low)
        if loud > 0.1:
            ref = self._brightness_ref
            self._brightness_ref = brightness if ref is None else ref + 0.05 * (brightness - ref)
        rel = brightness - (self._brightness_ref if self._brightness_ref is not None else brightness)
        gate = min(1.0, loud * 2)
        width = float(np.clip(rel / 12.0, -1, 1)) * gate
        rounding = float(np.clip(-rel / 12.0, 0, 1)) * voiced * gate
        self._open += (0.8 if loud > self._open else 0.45) * (loud - self._open)  # fast attack, softer release
        self._width += 0.5 * (width - self._width)
        self._round += 0.5 * (rounding - self._round)
        return MouthShape(self._open, self._width, self._round, loud)
