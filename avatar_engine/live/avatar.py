"""The live avatar: the embedded engine's face rig and mouth painting, one frame at a time.

The rig, the mouth model and the face are prepared once per session; a frame is the clip engine's
per-frame work (`engines.parametric.engine.render_frame`). Live lips start from closed (the session
has no look-ahead to tell a pause from a gap between words).
"""

from __future__ import annotations

import numpy as np

from ..engines.parametric.engine import render_frame
from ..engines.parametric.paint import mouth_model
from ..engines.parametric.rig import FaceRig
from ..face import regions as R
from ..face.locate import locate_face
from .lips import MouthShape
from .motion import Pose


class LiveAvatar:
    def __init__(self, image: np.ndarray, source_scale: float = 1.0):
        points, self.face_box = locate_face(image, source_scale)
        self.image = image
        self.rig = FaceRig(image, points)
        self.mouth = mouth_model(image, points, self.rig.face_h)
        self.mouth_box = self._mouth_box(points)

    @staticmethod
    def _mouth_box(points: np.ndarray) -> list[int]:
        """[x0, y0, x1, y1] around the lips with some margin: where a viewer (or a test) sees them move."""
        lips = points[list(R.LIPS_OUTER_UPPER) + list(R.LIPS_OUTER_LOWER), :2]
        (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
        pad_x, pad_y = 0.15 * (x1 - x0), 0.6 * (y1 - y0)
        return [int(x0 - pad_x), int(y0 - pad_y), int(x1 + pad_x), int(y1 + 2 * pad_y)]

    def render(self, mouth: MouthShape, blink: float, pose: Pose) -> np.ndarray:
        coeffs = {"close": 1.0, "blink": blink, "open": mouth.open, "width": mouth.width, "round": mouth.round}
        return render_frame(self.rig, self.mouth, coeffs, pose)
