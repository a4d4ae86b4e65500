"""The one mel front end of every audio-driven network (Wav2Lip, SadTalker, Diff2Lip hparams).

All three were trained on Wav2Lip's `audio.melspectrogram`: pre-emphasis 0.97, periodic-Hann STFT
n_fft = win = 800, hop 200 at 16 kHz, magnitude, 80 Slaney mel bands 55-7600 Hz, dB with a -100 dB
floor minus 20 dB, symmetric normalisation clipped to +-4. They differ only in the STFT's centre
padding, which depends on the librosa version each upstream ran: `reflect` (librosa 0.7, Wav2Lip's
checkpoints) or `zero` (librosa >= 0.9: SadTalker's and Diff2Lip's reference runs).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 80.0
MEL_WINDOW = 16  # mel frames per video frame fed to the networks (200 ms)

Padding = Literal["reflect", "zero"]


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's Auditory-Toolbox mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear_step = 200.0 / 3.0
    log_step = math.log(6.4) / 27.0
    knee_mel = 1000.0 / linear_step
    return np.where(hz >= 1000.0, knee_mel + np.log(np.maximum(hz, 1e-12) / 1000.0) / log_step, hz / linear_step)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear_step = 200.0 / 3.0
    log_step = math.log(6.4) / 27.0
    knee_mel = 1000.0 / linear_step
    return np.where(mel >= knee_mel, 1000.0 * np.exp(log_step * (mel - knee_mel)), mel * linear_step)


@lru_cache(maxsize=4)
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = NUM_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular Slaney filters, area-normalised, rounded as librosa rounds (float32)."""
    bin_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_hz = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - bin_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    # librosa's rounding: triangles stored as float32, then scaled in place (float32 result)
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights = (weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]).astype(np.float32).astype(np.float64)
    weights.setflags(write=False)
    return weights


def melspectrogram(wav: np.ndarray, *, padding: Padding = "reflect", frames_per_chunk: int = 4096,
                   dtype=np.float32) -> np.ndarray:
    """16 kHz mono waveform -> (80, 1 + len//200) mel in [-4, 4].

    Computed in float64 in chunks of frames, so a five-minute clip needs only tens of MB; returned
    as `dtype` (float32 for the networks; float64 where a golden compares the features themselves).
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("melspectrogram needs at least one audio sample")
    emphasized = np.empty_like(x)
    emphasized[0] = x[0]
    emphasized[1:] = x[1:] - PREEMPHASIS * x[:-1]
    padded = np.pad(emphasized, N_FFT // 2, mode="reflect" if padding == "reflect" else "constant")
    n_frames = 1 + x.size // HOP
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    basis = mel_filterbank()
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    mel = np.empty((NUM_MELS, n_frames), dtype=np.float64)
    for start in range(0, n_frames, frames_per_chunk):
        chunk = frames[start : start + frames_per_chunk] * window
        magnitude = np.abs(np.fft.rfft(chunk, n=N_FFT, axis=1))
        mel[:, start : start + chunk.shape[0]] = basis @ magnitude.T
    floor = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(floor, mel)) - REF_LEVEL_DB
    normalized = 2.0 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(normalized, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(dtype)


def pad_to_window(mel: np.ndarray, frames: int = MEL_WINDOW) -> np.ndarray:
    """A (80, T) mel widened to at least one network window by appending silence (the normalised floor),
    so audio under 0.2 s still gets a full window."""
    if mel.shape[1] >= frames:
        return mel
    return np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), constant_values=-MAX_ABS_VALUE)
