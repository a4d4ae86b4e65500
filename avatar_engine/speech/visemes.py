"""Phones -> mouth shapes, using the Preston Blair / Rhubarb set (A-H, X).

Each viseme is a target (open, width, round); a track is built from phone timings with
coarticulation smoothing, then P/B/M closures are re-imposed so lips really meet.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .phonemes import Phone

# target mouth shapes: (open 0..1, width -1..1, round 0..1)
VISEME_SHAPES = {
    "A": (0.00, 0.00, 0.0),  # closed: P B M
    "B": (0.22, 0.35, 0.0),  # slightly open, teeth together: most consonants, EE
    "C": (0.55, 0.25, 0.0),  # open: EH AE AH
    "D": (0.90, 0.10, 0.0),  # wide open: AA
    "E": (0.50, -0.25, 0.5),  # slightly rounded: AO ER
    "F": (0.28, -0.60, 1.0),  # puckered: UW OW W
    "G": (0.12, 0.15, 0.0),  # F V: upper teeth on lower lip
    "H": (0.42, 0.10, 0.0),  # L: tongue up
    "X": (0.00, 0.00, 0.0),  # rest
}

PHONE_TO_VISEME = {
    **dict.fromkeys(["P", "B", "M"], "A"),
    **dict.fromkeys(["T", "D", "K", "G", "N", "NG", "S", "Z", "SH", "ZH", "CH", "JH", "TH", "DH", "HH", "Y",
                     "IY", "IH", "EY"], "B"),
    **dict.fromkeys(["EH", "AE", "AH", "AY"], "C"),
    **dict.fromkeys(["AA", "AW"], "D"),
    **dict.fromkeys(["AO", "ER", "OY", "R"], "E"),
    **dict.fromkeys(["UW", "UH", "OW", "W"], "F"),
    **dict.fromkeys(["F", "V"], "G"),
    "L": "H",
}


def viseme_of(phone: str) -> str:
    return PHONE_TO_VISEME.get(phone, "X")


def viseme_track(phones: list[Phone], n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(open, width, round, closure) per video frame; `closure` is 1 where lips must meet (P/B/M)."""
    step = 0.01
    n = int(np.ceil(n_frames / fps / step)) + 1
    shape = np.zeros((n, 3), dtype=np.float64)
    closure = np.zeros(n)
    for ph in phones:
        a, b = int(ph.start_s / step), max(int(ph.start_s / step) + 1, int(ph.end_s / step))
        v = viseme_of(ph.label)
        shape[a:b] = VISEME_SHAPES[v]
        if v == "A":
            mid = (a + b) // 2  # closure held through the middle of the stop, released at its end
            closure[max(a, mid - 3):min(b, mid + 3)] = 1.0
    smooth = gaussian_filter1d(shape, sigma=3.0, axis=0, mode="nearest")  # ~30 ms coarticulation
    closure = gaussian_filter1d(closure, sigma=1.0, mode="nearest")
    smooth[:, 0] *= 1.0 - np.clip(closure * 1.5, 0.0, 1.0)
    centers = ((np.arange(n_frames) + 0.5) / fps / step).astype(int).clip(0, n - 1)
    return smooth[centers, 0], smooth[centers, 1], smooth[centers, 2], closure[centers]
