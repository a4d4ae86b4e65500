"""The inside of the mouth: what a warp cannot invent when the lips part.

Drawn per frame inside the target inner-lip contour, on a small box around it: a dark oral cavity,
a hint of upper teeth hanging from the upper lip, and the lip contact line when nearly closed.
Edges are anti-aliased (sub-pixel polygons) so there is never a hole or a seam.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...face import regions as R
from ...face.blend import smoothstep

_SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
_CAVITY_DEEP = np.array([28, 10, 12], np.float32)
_CAVITY_NEAR = np.array([92, 38, 40], np.float32)
_DEFAULT_TEETH = np.array([222, 214, 200], np.float32)
_TONGUE = np.array([150, 62, 66], np.float32)


@dataclass(frozen=True)
class MouthStyle:
    """Colours taken from the portrait once per clip, so painted parts match the person."""

    upper_lip: np.ndarray
    lower_lip: np.ndarray
    teeth: np.ndarray
    cavity_deep: np.ndarray
    cavity_near: np.ndarray
    tongue: np.ndarray

    @property
    def seam(self) -> np.ndarray:
        return 0.45 * (self.upper_lip + self.lower_lip) / 2


def _poly(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _region_pixels(image: np.ndarray, outline: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [_poly(outline)], 255, cv2.LINE_8, _SHIFT)
    return image[mask > 0].astype(np.float32)


def mouth_style(image: np.ndarray, landmarks: np.ndarray) -> MouthStyle:
    """Lip colours (median of each lip) and teeth colour (if the portrait shows teeth)."""
    xy = landmarks[:, :2]
    upper = _region_pixels(image, np.concatenate([xy[R.LIPS_OUTER_UPPER], xy[R.LIPS_INNER_UPPER][::-1]]))
    lower = _region_pixels(image, np.concatenate([xy[R.LIPS_OUTER_LOWER], xy[R.LIPS_INNER_LOWER][::-1]]))
    inner = _region_pixels(image, np.concatenate([xy[R.LIPS_INNER_UPPER], xy[R.LIPS_INNER_LOWER][::-1]]))
    lip_default = np.array([170, 95, 95], np.float32)
    up = np.median(upper, 0) if len(upper) else lip_default
    lo = np.median(lower, 0) if len(lower) else lip_default
    teeth = _DEFAULT_TEETH
    if len(inner) >= 12:
        bright = inner[inner.sum(1) >= np.percentile(inner.sum(1), 70)]
        candidate = np.median(bright, 0)
        if candidate.mean() > 150 and np.ptp(candidate) < 60:  # light and greyish: visible teeth
            teeth = 0.5 * candidate + 0.5 * _DEFAULT_TEETH
    # a black-and-white (or tinted) portrait gets a mouth with as little colour as its lips have
    chroma = float(np.clip(np.ptp(np.concatenate([up, lo]).reshape(2, 3), axis=1).mean() / 60.0, 0.0, 1.0))

    def tone(color: np.ndarray) -> np.ndarray:
        grey = np.full(3, color.mean(), np.float32)
        return (grey + (color - grey) * chroma).astype(np.float32)

    return MouthStyle(upper_lip=up, lower_lip=lo, teeth=tone(teeth), cavity_deep=tone(_CAVITY_DEEP),
                      cavity_near=tone(_CAVITY_NEAR), tongue=tone(_TONGUE))


def paint_mouth(frame: np.ndarray, landmarks: np.ndarray, face_h: float, style: MouthStyle) -> None:
    """Paint the mouth interior into `frame` (in place) for landmark positions `landmarks`."""
    upper = landmarks[R.LIPS_INNER_UPPER, :2]
    lower = landmarks[R.LIPS_INNER_LOWER, :2]
    contour = np.concatenate([upper, lower[::-1][1:-1]])
    h_img, w_img = frame.shape[:2]
    x0, y0 = np.floor(contour.min(0) - 3).astype(int)
    x1, y1 = np.ceil(contour.max(0) + 3).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w_img), min(y1, h_img)
    if x1 - x0 < 3 or y1 - y0 < 2:
        return
    offset = np.array([x0, y0], np.float64)
    box = (y1 - y0, x1 - x0)
    up, lo = upper - offset, lower - offset
    gaps = np.linalg.norm(lo - up, axis=1)
    gap = float(gaps[len(gaps) // 2])
    line_w = max(1, int(round(face_h / 110)))

    mask = np.zeros(box, np.uint8)
    cv2.fillPoly(mask, [_poly(np.concatenate([up, lo[::-1]]))], 255, cv2.LINE_AA, _SHIFT)
    alpha = mask.astype(np.float32) / 255.0

    # cavity colour: lighter near the lips, darker in the middle of the opening
    ys = np.arange(box[0], dtype=np.float32)[:, None]
    mid_y = float((up[:, 1].mean() + lo[:, 1].mean()) / 2)
    depth = np.clip(1.0 - np.abs(ys - mid_y) / max(gap / 2, 1.0), 0, 1)[..., None]
    color = style.cavity_near + (style.cavity_deep - style.cavity_near) * depth
    color = np.broadcast_to(color, box + (3,)).copy()

    # tongue, low in a wide-open mouth
    if gap > 0.05 * face_h:
        tongue = np.zeros(box, np.uint8)
        center = lo[len(lo) // 2] - np.array([0, 0.22 * gap])
        axes = (max(1, int(0.28 * np.linalg.norm(up[-1] - up[0]))), max(1, int(0.22 * gap)))
        cv2.ellipse(tongue, (tuple(np.round(center * (1 << _SHIFT)).astype(int))),
                    (axes[0] << _SHIFT, axes[1] << _SHIFT), 0, 180, 360, 255, -1, cv2.LINE_AA, _SHIFT)
        t = cv2.GaussianBlur(tongue, (0, 0), 1.0).astype(np.float32)[..., None] / 255.0 * 0.7
        color = color * (1 - t) + style.tongue * t

    # upper teeth: a band hanging from the upper lip, shorter at the corners, shaded at the sides
    teeth_h = min(0.032 * face_h, 0.5 * gap)
    if teeth_h > 0.6:
        across = np.linspace(-1, 1, len(up))
        drop = teeth_h * np.sqrt(np.clip(1 - across ** 2, 0, 1))[:, None] * np.array([[0.0, 1.0]])
        teeth = np.zeros(box, np.uint8)
        cv2.fillPoly(teeth, [_poly(np.concatenate([up, (up + drop)[::-1]]))], 255, cv2.LINE_AA, _SHIFT)
        xs = np.arange(box[1], dtype=np.float32)[None, :]
        cx = float(up[:, 0].mean())
        half = max(float(np.ptp(up[:, 0])) / 2, 1.0)
        # bright in front, shadowed towards the corners where the teeth turn away
        shade = np.clip(1.08 - 0.55 * np.abs((xs - cx) / half) ** 3, 0.5, 1.0)[..., None]
        ta = teeth.astype(np.float32)[..., None] / 255.0
        color = color * (1 - ta) + np.minimum(style.teeth * shade, 255.0) * ta

    region = frame[y0:y1, x0:x1].astype(np.float32)
    # lip margins: a thin band of each lip's own colour along the inner contour hides whatever
    # the portrait showed between the lips (teeth of a smile) once the lips move
    # (the upper band reaches a little higher: the mesh's inner-lip line runs just below the gum line)
    lift = np.array([0.0, 0.8 * line_w])
    for contours, lip_color in (((up, up - lift), style.upper_lip), ((lo,), style.lower_lip)):
        band = np.zeros(box, np.uint8)
        cv2.polylines(band, [_poly(c) for c in contours], False, 255, line_w + 2, cv2.LINE_AA, _SHIFT)
        b = band.astype(np.float32)[..., None] / 255.0 * 0.9
        region = region * (1 - b) + lip_color * b
    a = alpha[..., None]
    out = region * (1 - a) + color * a

    # lip contact line, strongest when the lips touch
    seam_strength = float(np.clip(1.0 - gap / (0.02 * face_h + 1e-6), 0, 1))
    if seam_strength > 0:
        seam = np.zeros(box, np.uint8)
        cv2.polylines(seam, [_poly((up + lo) / 2)], False, 255, line_w, cv2.LINE_AA, _SHIFT)
        s = seam.astype(np.float32)[..., None] / 255.0 * (0.85 * seam_strength)
        out = out * (1 - s) + style.seam * s
    frame[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


_LASH = np.array([52, 36, 32], np.float32)
_EYES = ((R.EYE_R_UPPER, R.EYE_R_LOWER), (R.EYE_L_UPPER, R.EYE_L_LOWER))


def paint_eyelids(frame: np.ndarray, open_landmarks: np.ndarray, closure: float) -> None:
    """Cover the eyes with lid skin as a blink completes (in place).

    The warp lowers the lid; at small face sizes that alone leaves a sliver of iris, so near full
    closure the eye opening is filled with skin cloned from just above it, plus a lash line.
    `open_landmarks` are the frame's landmark positions without the blink.
    """
    if closure <= 0.35:
        return
    strength = float(smoothstep((closure - 0.35) / 0.55))
    h_img, w_img = frame.shape[:2]
    for upper_ids, lower_ids in _EYES:
        up, lo = open_landmarks[upper_ids, :2], open_landmarks[lower_ids, :2]
        eye_h = float(np.max(np.linalg.norm(lo - up, axis=1)))
        pad = max(2.0, 0.35 * eye_h)
        outline = np.concatenate([up, lo[::-1]])
        x0, y0 = np.floor(outline.min(0) - pad).astype(int)
        x1, y1 = np.ceil(outline.max(0) + pad).astype(int)
        shift = int(round(eye_h + pad))
        if x0 < 0 or y0 - shift < 0 or x1 > w_img or y1 > h_img or x1 - x0 < 3:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [_poly(outline - [x0, y0])], 255, cv2.LINE_AA, _SHIFT)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        alpha = cv2.GaussianBlur(mask, (0, 0), max(0.6, 0.12 * eye_h)).astype(np.float32)[..., None] / 255.0
        skin = frame[y0 - shift:y1 - shift, x0:x1].astype(np.float32)
        region = frame[y0:y1, x0:x1].astype(np.float32)
        out = region * (1 - alpha * strength) + skin * (alpha * strength)
        lash = np.zeros(mask.shape, np.uint8)
        closed_line = lo + 0.15 * (up - lo)
        cv2.polylines(lash, [_poly(closed_line - [x0, y0])], False, 255, max(1, int(round(eye_h / 6))), cv2.LINE_AA, _SHIFT)
        la = lash.astype(np.float32)[..., None] / 255.0 * (0.75 * strength)
        out = out * (1 - la) + _LASH * la
        frame[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
