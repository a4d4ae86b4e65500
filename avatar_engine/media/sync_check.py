"""A/V sync self-check: does the rendered mouth move with the speech, and how far off is it?

The mouth opening is tracked in the finished MP4 with the same landmark model the embedded engine
uses, then cross-correlated with the audio loudness over +-15 frames (SyncNet's search window).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..face import regions as R
from ..face.landmarks import FaceTracker
from ..speech.features import frame_features

MAX_LAG_FRAMES = 15


@dataclass
class SyncReport:
    offset_ms: float  # > 0: the mouth moves after the sound it belongs to
    confidence: float  # peak Pearson correlation, -1..1
    frames: int

    def to_dict(self) -> dict:
        return {"offset_ms": round(self.offset_ms, 1), "confidence": round(self.confidence, 3), "frames": self.frames}


@dataclass
class FaceTrack:
    """What a viewer would see of the face, frame by frame (NaN where no face was found)."""

    points: np.ndarray  # (n, 468, 3) face-mesh landmarks
    mouth_open: np.ndarray  # inner-lip gap / face height
    eye_open: np.ndarray  # lid gap / eye width, from the iris model (the mesh barely follows blinks)
    fps: float


def track_face(video_path: str | Path, *, eyes: bool = False) -> FaceTrack:
    """Decode the MP4 and track the face in every frame (see `FaceTracker`)."""
    tracker = FaceTracker()
    tracked, eye_open = [], []
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            points = tracker.update(rgb)
            if points is None:
                tracked.append(np.full((468, 3), np.nan, np.float32))
                eye_open.append(np.nan)
                continue
            tracked.append(points)
            if eyes:
                eye_open.append(float(np.mean([R.lid_opening(c) for c in tracker.mesh.eye_contours(rgb, points)])))
    pts = np.stack(tracked)
    mouth = np.array([R.mouth_opening(p) for p in pts])
    return FaceTrack(pts, mouth, np.asarray(eye_open if eyes else [np.nan] * len(pts)), fps)


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
    track = track_face(video_path)
    loudness = frame_features(wav16k, len(track.mouth_open), track.fps).loudness
    return sync_offset(track.mouth_open, loudness, track.fps)
