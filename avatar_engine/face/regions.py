"""Named groups of MediaPipe face-mesh (468) indices, image-left first (the subject's right side)."""

from __future__ import annotations

import numpy as np

# Lips: contours run from the image-left mouth corner to the image-right one.
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
MOUTH_CORNERS = (61, 291)
INNER_LIP_MID = (13, 14)

# Eyes: upper and lower lids paired point by point (same order), plus the corners.
EYE_R_UPPER = [246, 161, 160, 159, 158, 157, 173]  # image-left eye
EYE_R_LOWER = [7, 163, 144, 145, 153, 154, 155]
EYE_R_CORNERS = (33, 133)
EYE_L_UPPER = [466, 388, 387, 386, 385, 384, 398]  # image-right eye
EYE_L_LOWER = [249, 390, 373, 374, 380, 381, 382]
EYE_L_CORNERS = (263, 362)

# Jaw / face oval from the image-left temple down around the chin to the image-right temple.
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
CHIN = 152
FOREHEAD = 10
NOSE_TIP = 1

# The 68-point (dlib / iBUG) roles MuseTalk's crop reads, on the mesh: the jaw line from the image-left ear round
# the chin to the image-right ear (dlib 0-16), and dlib 29 on the nose bridge (mesh 168, 6, 197, 195, 5, 4 run
# from between the eyes to the tip; dlib 27-30 split that line in thirds, so 29 lies between 195 and 5).
JAW_68 = (127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356)
NOSE_BRIDGE_68_29 = (195, 5)


def face_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Face-aligned axes: origin at the mouth centre, unit `right` along the eye line, `down`
    perpendicular towards the chin, and the face height (forehead to chin) in pixels."""
    xy = points[:, :2]
    right = xy[263] - xy[33]
    right = right / (np.linalg.norm(right) + 1e-9)
    down = np.array([-right[1], right[0]])
    if np.dot(xy[CHIN] - xy[FOREHEAD], down) < 0:
        down = -down
    origin = (xy[INNER_LIP_MID[0]] + xy[INNER_LIP_MID[1]]) / 2
    height = float(np.linalg.norm(xy[CHIN] - xy[FOREHEAD]))
    return origin, right, down, height


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap over face height: the quantity the sync self-check tracks."""
    xy = points[:, :2]
    gap = float(np.linalg.norm(xy[INNER_LIP_MID[1]] - xy[INNER_LIP_MID[0]]))
    return gap / (float(np.linalg.norm(xy[CHIN] - xy[FOREHEAD])) + 1e-9)


def lid_opening(contour: np.ndarray) -> float:
    """Lid gap over eye width from an iris-model eye contour (71 points)."""
    lower, upper = contour[2:7], contour[10:15]  # the middle of each lid, pairwise above/below
    gap = np.linalg.norm(upper - lower[[0, 1, 2, 3, 4]], axis=1).mean()
    return float(gap / (np.linalg.norm(contour[8] - contour[0]) + 1e-9))
