"""The per-frame mouth track (open, width, round) from speech, by phonemes or by signal."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .features import FrameFeatures, frame_features

log = logging.getLogger(__name__)


@dataclass
class MouthTrack:
    open: np.ndarray  # 0..1 jaw/lip opening
    width: np.ndarray  # -1 (narrow) .. 1 (spread)
    round: np.ndarray  # 0..1 lip rounding
    loudness: np.ndarray  # 0..1, drives head emphasis
    method: str  # "phonemes", "alignment" or "signal"


def _signal_shapes(f: FrameFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    opening = gaussian_filter1d(f.loudness, 0.7, mode="nearest")
    bright = f.brightness - np.median(f.brightness[f.loudness > 0.1]) if np.any(f.loudness > 0.1) else f.brightness * 0
    width = np.clip(bright / 12.0, -1, 1) * np.clip(f.loudness * 2, 0, 1)
    rounding = np.clip(-bright / 12.0, 0, 1) * f.voiced * np.clip(f.loudness * 2, 0, 1)
    return (np.clip(opening, 0, 1), gaussian_filter1d(width, 1.5, mode="nearest"),
            gaussian_filter1d(rounding, 1.5, mode="nearest"))


def mouth_track(wav16k: np.ndarray, n_frames: int, fps: float, *, lipsync: str = "auto",
                language: str = "en", transcript: str | None = None, timeline=None) -> MouthTrack:
    """Phonemes for English (aligned to `transcript` when given), the signal path otherwise.

    A `timeline` (speech/timeline.py: a synthesizer's, exact in any language, or a transcript's
    alignment done already for captions) is used instead of recognition unless `lipsync` is "signal".
    Phoneme shapes are scaled by loudness so a mis-recognised phone in a quiet stretch cannot
    open the mouth, and silence always keeps it closed.
    """
    feats = frame_features(wav16k, n_frames, fps)
    open_s, width_s, round_s = _signal_shapes(feats)
    english = language.lower().startswith("en")
    given = timeline is not None and bool(timeline.phones)
    if lipsync == "signal" or (lipsync == "auto" and not english and not given):
        return MouthTrack(open_s, width_s, round_s, feats.loudness, "signal")
    from .phonemes import align_phones, recognize_phones
    from .visemes import viseme_track

    phones, method = None, "phonemes"
    if given:
        phones, method = list(timeline.phones), timeline.source  # "synthesizer" or "alignment"
    elif transcript:
        phones, method = align_phones(wav16k, transcript), "alignment"
    if not phones:
        phones, method = recognize_phones(wav16k), "phonemes"
    if not phones:
        return MouthTrack(open_s, width_s, round_s, feats.loudness, "signal")
    v_open, v_width, v_round, closure = viseme_track(phones, n_frames, fps)
    gate = np.clip(feats.loudness * 1.6, 0, 1)
    opening = (0.55 * v_open + 0.45 * open_s) * gate * (1 - np.clip(closure * 1.5, 0, 1))
    return MouthTrack(np.clip(opening, 0, 1), np.clip(0.7 * v_width + 0.3 * width_s, -1, 1),
                      np.clip(0.7 * v_round + 0.3 * round_s, 0, 1) * gate, feats.loudness, method)
