"""A/V sync self-check: does the rendered mouth move with the speech, and how far off is it?

The mouth opening is tracked in the finished MP4 with the same landmark model the embedded engine
uses, then cross-correlated with the audio loudness over +-15 frames (SyncNet's search window).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .face import regions as R
from .face.landmarks import get_face_mesh
from .speech.features import frame_features

MAX_LAG_FRAMES = 15


@dataclass
class SyncReport:
    offset_ms: float  # > 0: the mouth moves after the sound it belongs to
    confidence: float  # peak Pearson correlation, -1..1
    frames: int

    def to_dict(self) -> dict:
        return {"offset_ms": round(self.offset_ms, 1), "confidence": round(self.confidence, 3), "frames": self.frames}


def track_mouth(video_path: str | Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-frame (mouth opening, eye opening) from the decoded video, and its fps."""
    mesh = get_face_mesh()
    mouth, eyes, points = [], [], None
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            if points is None:
                faces = mesh.detect(rgb)
                if not faces:
                    mouth.append(np.nan)
                    eyes.append(np.nan)
                    continue
                points, _ = mesh.landmarks(rgb, faces[0])
            else:
                points, _ = mesh.refit(rgb, points)
            mouth.append(R.mouth_opening(points))
            eyes.append(R.eye_opening(points))
    return np.asarray(mouth), np.asarray(eyes), fps


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def sync_offset(mouth: np.ndarray, loudness: np.ndarray, fps: float) -> SyncReport:
    """Lag (in frames, within +-15) maximising corr(mouth[t], loudness[t - lag])."""
    n = min(len(mouth), len(loudness))
    mouth, loudness = mouth[:n], loudness[:n]
    best_lag, best = 0, -1.0
    for lag in range(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1):
        if lag >= 0:
            c = _pearson(mouth[lag:], loudness[:n - lag])
        else:
            c = _pearson(mouth[:n + lag], loudness[-lag:])
        if c > best + 1e-9 or (abs(c - best) <= 1e-9 and abs(lag) < abs(best_lag)):
            best_lag, best = lag, c
    return SyncReport(offset_ms=best_lag * 1000.0 / fps, confidence=best, frames=n)


def sync_check(video_path: str | Path, wav16k: np.ndarray) -> SyncReport:
    """Track the mouth in the MP4 and correlate it with the speech loudness."""
    mouth, _, fps = track_mouth(video_path)
    loudness = frame_features(wav16k, len(mouth), fps).loudness
    return sync_offset(mouth, loudness, fps)
