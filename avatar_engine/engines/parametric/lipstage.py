"""The embedded engine as a lip stage: repaint the mouth of another engine's frames from the speech.

Used where no neural lip model is mounted (e.g. after FOMM's head motion). The face is tracked per
frame (the frames move), and each frame gets its own small rig built on that frame's landmarks
(~15-30 ms): the source's own mouth is the rest pose, closed, opened, spread and rounded by the same
mouth track the embedded engine renders with, its own teeth moving with skull and jaw. A frame where no face is tracked passes through unchanged.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from ...face.landmarks import FaceTracker
from ...face.locate import locate_face
from ...speech.mouth import MouthTrack, mouth_track
from ..base import RenderJob
from .engine import render_frame
from .paint import mouth_model
from .rig import FaceRig


def mouth_coeffs(track: MouthTrack, index: int) -> dict[str, float]:
    """Rig coefficients of frame `index`: the source's own mouth at rest, shaped by the speech."""
    i = min(index, len(track.open) - 1)
    track.wait(i)
    return {"close": float(track.closed[i]), "open": float(track.open[i]), "width": float(track.width[i]),
            "round": float(track.round[i])}


def repaint_mouth(frame: np.ndarray, points: np.ndarray, coeffs: dict[str, float]) -> np.ndarray:
    """`frame` with its mouth re-posed to `coeffs` and the interior painted (a new array); the frame's
    own mouth (teeth, cavity, colours) is the texture."""
    rig = FaceRig(frame, points)
    return render_frame(rig, mouth_model(frame, points, rig.face_h), coeffs)


def refine_mouths(frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
    """The lip stage: per-clip work (speech -> mouth track, lip colours from the portrait) happens now,
    so its errors come before any frame; frames are then repainted lazily, one at a time."""
    req = job.request
    check = (lambda: job.deadline.check("speech analysis")) if job.deadline is not None else None
    track = mouth_track(job.audio.analysis, job.n_frames, job.fps, lipsync=req.lipsync, language=req.language,
                        transcript=req.transcript, timeline=job.audio.timeline, check=check, background=True)
    locate_face(job.image, job.source_scale)  # a portrait without a usable face fails before any frame
    return _repainted(frames, track)


def _repainted(frames: Iterable[np.ndarray], track: MouthTrack) -> Iterator[np.ndarray]:
    tracker = FaceTracker()
    try:
        for index, frame in enumerate(frames):
            points = tracker.update(frame)
            yield frame if points is None else repaint_mouth(frame, points, mouth_coeffs(track, index))
    finally:
        track.stop()
