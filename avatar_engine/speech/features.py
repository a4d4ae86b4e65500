"""Per-video-frame loudness and spectral shape: the language-independent lip-sync signal.

Frame i covers the audio shown while it is on screen, [i/fps, (i+1)/fps); every consumer (the
mouth track and the A/V self-check) uses these same windows, so they share one time base.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000
_HOP = 160  # 10 ms analysis hop
_WIN = 400  # 25 ms window
SILENCE_DBFS = -50.0  # quieter than this is never speech


@dataclass
class FrameFeatures:
    """Arrays of length n_frames."""

    level_db: np.ndarray  # RMS level, dBFS
    loudness: np.ndarray  # 0..1: level mapped between the noise floor and the speech peak
    brightness: np.ndarray  # high-band minus low-band energy, dB (fricatives / spread vowels high)
    voiced: np.ndarray  # 0..1 share of energy in the voice band


_BLOCK = 2048  # analysis hops per block (~20 s): memory stays flat for long clips


def analysis_tracks(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10 ms tracks of (power, high-band power ratio, voice-band share), computed block by block."""
    pad = np.pad(wav.astype(np.float32), (_WIN // 2, _WIN // 2 + _HOP))
    n = 1 + (len(pad) - _WIN) // _HOP
    window = np.hanning(_WIN).astype(np.float32)
    freqs = np.fft.rfftfreq(_WIN, 1.0 / RATE)
    low_band, high_band = (freqs >= 250) & (freqs < 1200), (freqs >= 2500) & (freqs < 6000)
    voice_band, all_band = (freqs >= 80) & (freqs < 1200), freqs >= 80
    power, ratio, voiced = (np.empty(n, np.float64) for _ in range(3))
    offsets = np.arange(_WIN)[None, :]
    for start in range(0, n, _BLOCK):
        hops = np.arange(start, min(n, start + _BLOCK))
        frames = pad[offsets + _HOP * hops[:, None]] * window
        spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        power[hops] = (frames ** 2).mean(axis=1)
        ratio[hops] = spec[:, high_band].sum(axis=1) / (spec[:, low_band].sum(axis=1) + 1e-10)
        voiced[hops] = spec[:, voice_band].sum(axis=1) / (spec[:, all_band].sum(axis=1) + 1e-10)
    return power, ratio, voiced


def _per_frame(track: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """Average a 10 ms track over each video frame's on-screen interval."""
    edges = np.round(np.arange(n_frames + 1) * (100.0 / fps)).astype(int)
    edges = np.clip(edges, 0, len(track))
    csum = np.concatenate([[0.0], np.cumsum(track, dtype=np.float64)])
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    out = (csum[edges[1:]] - csum[edges[:-1]]) / counts
    empty = edges[1:] <= edges[:-1]
    out[empty] = 0.0
    return out


def frame_features(wav16k: np.ndarray, n_frames: int, fps: float) -> FrameFeatures:
    power, ratio, voiced = analysis_tracks(wav16k)
    level = 10 * np.log10(_per_frame(power, n_frames, fps) + 1e-12)
    brightness = 10 * np.log10(_per_frame(ratio * power, n_frames, fps) + 1e-12) - 10 * np.log10(
        _per_frame(power, n_frames, fps) + 1e-12
    )
    voiced_f = _per_frame(voiced * power, n_frames, fps) / (_per_frame(power, n_frames, fps) + 1e-12)
    return FrameFeatures(level_db=level, loudness=loudness_from_level(level), brightness=brightness,
                         voiced=np.clip(voiced_f, 0, 1))


def loudness_from_level(level_db: np.ndarray) -> np.ndarray:
    """Map dBFS to 0..1 relative to this clip's speech peak; absolute silence stays 0."""
    active = level_db[level_db > SILENCE_DBFS]
    if active.size == 0:
        return np.zeros_like(level_db)
    peak = float(np.percentile(active, 95))
    floor = max(SILENCE_DBFS, peak - 32.0)
    out = np.clip((level_db - floor) / max(peak - floor, 1.0), 0.0, 1.0)
    return out ** 1.3
