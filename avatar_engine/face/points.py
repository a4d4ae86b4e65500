"""The one five-point face definition every alignment uses (GFPGAN's template, SadTalker's crop and 3DMM fit).

Order and meaning follow Deep3DFaceRecon's `extract_5p`, which SadTalker runs on dlib's 68 points: the
midpoint of each eye's two corners (dlib 37/40 and 43/46, 1-based), the nose tip (dlib 31) and the two
mouth corners (dlib 49, 55) — the image-left eye first. RetinaFace's five points, which GFPGAN's FFHQ
template was made from, mark the same places (eye centres, nose tip, mouth corners). On MediaPipe's mesh
those are points 33/133 and 362/263 (eye corners), 1 (pronasale: the nose tip) and 61/291.
"""

from __future__ import annotations

import numpy as np

# the mesh indices are the face kit's one set (face/regions.py); EYE_R is the image-left eye
from .regions import EYE_L_CORNERS, EYE_R_CORNERS, MOUTH_CORNERS, NOSE_TIP


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(468|478, 2|3) FaceMesh points in pixels (x right, y down) -> (5, 2) float32:
    image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
        raise ValueError(f"expected (468+, 2+) FaceMesh landmarks, got shape {lm.shape}")
    lm = lm[:, :2]
    return np.stack([
        lm[list(EYE_R_CORNERS)].mean(axis=0),
        lm[list(EYE_L_CORNERS)].mean(axis=0),
        lm[NOSE_TIP],
        lm[MOUTH_CORNERS[0]],
        lm[MOUTH_CORNERS[1]],
    ]).astype(np.float32)
