"""The embedded engine as a lip stage: repaint the mouth of another engine's frames from the speech.

Used where no neural lip model is mounted (e.g. after FOMM's head motion). The face is tracked per
frame (the frames move), and each frame gets its own small rig built on that frame's landmarks
(~15-30 ms): the lips are first closed at rest (whatever the source showed), then opened, spread and
rounded by the same mouth track the embedded engine renders with, and the mouth interior is painted
in the portrait's colours. A frame where no face is tracked passes through unchanged.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from ...face.landmarks import FaceTracker
from ...face.locate import locate_face
from ...speech.mouth import MouthTrack, mouth_track
from ..base import RenderJob
from .paint import MouthStyle, mouth_style, paint_mouth
from .rig import FaceRig


def mouth_coeffs(track: MouthTrack, index: int) -> dict[str, float]:
    """Rig coefficients of frame `index`: lips closed at rest, then shaped by the speech."""
    i = min(index, len(track.open) - 1)
    return {"close": 1.0, "open": float(track.open[i]), "width": float(track.width[i]),
            "round": float(track.round[i])}


def repaint_mouth(frame: np.ndarray, points: np.ndarray, coeffs: dict[str, float], style: MouthStyle) -> np.ndarray:
    """`frame` with its mouth re-posed to `coeffs` and the interior painted (a new array)."""
    rig = FaceRig(frame, points)
    out = rig.deform(coeffs)
    paint_mouth(out, rig.landmarks_at(coeffs), rig.face_h, style)
    return out


def refine_mouths(frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
    """The lip stage: per-clip work (speech -> mouth track, lip colours from the portrait) happens now,
    so its errors come before any frame; frames are then repainted lazily, one at a time."""
    req = job.request
    track = mouth_track(job.audio.analysis, job.n_frames, job.fps, lipsync=req.lipsync, language=req.language,
                        transcript=req.transcript, timeline=job.audio.timeline)
    points, _ = locate_face(job.image, job.source_scale)
    style = mouth_style(job.image, points)
    return _repainted(frames, track, style)


def _repainted(frames: Iterable[np.ndarray], track: MouthTrack, style: MouthStyle) -> Iterator[np.ndarray]:
    tracker = FaceTracker()
    for index, frame in enumerate(frames):
        points = tracker.update(frame)
        yield frame if points is None else repaint_mouth(frame, points, mouth_coeffs(track, index), style)
