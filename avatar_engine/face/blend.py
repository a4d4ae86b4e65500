"""Masks, feathering and paste-back: how every engine puts a rendered face back into the portrait.

A network renders a face crop; the crop is resized (or warped) back to where it came from and blended
through a feathered mask, so only the face changes and no seam or crop border shows. The square face
crop (`square_box`) follows upstream SadTalker's `Preprocesser.align_face` geometry (also used for FOMM's
256 px crop): a square around `eye_avg + 0.1 * eye_to_mouth` whose side is
`2 * max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|)`, kept square (shifted inside the image, never stretched).
The lip networks' boxes (Wav2Lip, Diff2Lip) come from landmarks, shaped like the S3FD detections upstream
crops from (`face_box_from_landmarks`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np


def smoothstep(u: np.ndarray) -> np.ndarray:
    """3u² - 2u³ on u clipped to [0, 1]: a ramp with zero slope at both ends (no visible edge)."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def smoothstep1(u: float) -> float:
    """`smoothstep` of one number, without numpy's per-call overhead (per-frame scalars)."""
    u = min(max(float(u), 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


def smooth_ramp(n: int, start: float, end: float) -> np.ndarray:
    """Smoothstep over `n` pixel centres: 0 before `start`, 1 after `end` (fractions of n), float32."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return smoothstep((t - start) / max(end - start, 1e-6)).astype(np.float32)


def lower_face_mask(height: int, width: int, top: float = 0.48, full: float = 0.64) -> np.ndarray:
    """(h, w, 1) float32 weights for lip networks that regenerate the lower half of a face box
    (Wav2Lip, Diff2Lip): 1 over mouth and chin, fading to ~0 at the box edges and exactly 0 above `top`."""
    rows = smooth_ramp(height, top, full) * (1.0 - smooth_ramp(height, 0.90, 1.0))
    cols = smooth_ramp(width, 0.0, 0.16) * (1.0 - smooth_ramp(width, 0.84, 1.0))
    return np.outer(rows, cols)[:, :, None].astype(np.float32)


def ellipse_mask(height: int, width: int, inner: float = 0.80, outer: float = 0.96) -> np.ndarray:
    """(h, w) float32: 1 inside the inscribed ellipse scaled by `inner`, smoothstep down to 0 at `outer`
    (radii relative to the half sides), 0 beyond (so the box's edges and corners stay original)."""
    if not 0 < inner < outer:
        raise ValueError("need 0 < inner < outer")
    ys = (2 * np.arange(height) + 1 - height) / height  # pixel centres in (-1, 1), exactly mirror-symmetric
    xs = (2 * np.arange(width) + 1 - width) / width
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    return smoothstep((outer - r) / (outer - inner)).astype(np.float32)


def match_colors(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel mean/std transfer measured on the feather band (where a seam would show).

    The band excludes the mask core, so an open dark mouth does not bias the statistics; the std
    ratio is clamped to keep the correction light.
    """
    band = (mask * (1.0 - mask)).reshape(-1)
    total = float(band.sum())
    if total < 1.0:
        return generated
    gen = generated.reshape(-1, 3)
    ref = original.reshape(-1, 3)
    gen_mean = band @ gen / total
    ref_mean = band @ ref / total
    gen_std = np.sqrt(band @ (gen - gen_mean) ** 2 / total) + 1e-3
    ref_std = np.sqrt(band @ (ref - ref_mean) ** 2 / total) + 1e-3
    gain = np.clip(ref_std / gen_std, 0.8, 1.25)
    return ((gen - gen_mean) * gain + ref_mean).reshape(generated.shape)


def paste_lower_face(frame: np.ndarray, box: tuple[int, int, int, int], face: np.ndarray) -> np.ndarray:
    """A copy of `frame` with a lip network's generated `face` (s, s, 3; any s, uint8 or float) resized into
    `box` (y1, y2, x1, x2) and blended into its lower part only, colours matched on the feather band."""
    y1, y2, x1, x2 = box
    height, width = y2 - y1, x2 - x1
    generated = cv2.resize(np.ascontiguousarray(face), (width, height), interpolation=cv2.INTER_LINEAR)
    original = frame[y1:y2, x1:x2].astype(np.float32)
    mask = lower_face_mask(height, width)
    generated = match_colors(generated.astype(np.float32, copy=False), original, mask)
    return blend_region(frame, box, generated, mask, base=original)


def blend_region(frame: np.ndarray, region: tuple[int, int, int, int], patch: np.ndarray, alpha: np.ndarray,
                 base: np.ndarray | None = None) -> np.ndarray:
    """A copy of `frame` whose `region` (y0, y1, x0, x1) is `base + alpha * (patch - base)`, rounded.

    `base` defaults to the frame's own pixels there (pass a precomputed float32 copy to save time).
    """
    y0, y1, x0, x1 = region
    out = frame.copy()
    if y1 <= y0 or x1 <= x0:
        return out
    original = frame[y0:y1, x0:x1].astype(np.float32) if base is None else base
    blended = original + alpha * (patch.astype(np.float32) - original)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def resize_to(face: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a rendered face to its place: area filter when shrinking, cubic when enlarging."""
    interp = cv2.INTER_AREA if face.shape[0] > height else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(face), (width, height), interpolation=interp)


# --- face boxes from landmarks ------------------------------------------------------------------

# A face box (y1, y2, x1, x2) in pixels, y2/x2 exclusive: upstream Wav2Lip's `--box` order, which the
# request's `face_box` and the lip stages (Wav2Lip, Diff2Lip) keep. Square crops use `Box`.
FaceBox = tuple[int, int, int, int]


def face_box_from_landmarks(landmarks_xy: np.ndarray, image_hw: tuple[int, int]) -> FaceBox:
    """A square-ish (y1, y2, x1, x2) face box from face landmarks, shaped like an S3FD detection.

    Expects points that outline the face (68-point iBUG, a dense mesh, or projected 3DMM points).
    The box spans the landmarks' width, ends at the chin and reaches up into the forehead, which
    68-point sets do not cover: its height is at least 1.1x the face scale. Clamped to the image.
    """
    points = np.asarray(landmarks_xy, dtype=np.float64).reshape(-1, 2)
    if points.shape[0] < 3 or not np.isfinite(points).all():
        raise ValueError("face_box_from_landmarks needs at least 3 finite (x, y) points")
    height, width = int(image_hw[0]), int(image_hw[1])
    x_min, y_min = points.min(axis=0)
    x_max, y_max = points.max(axis=0)
    scale = max(x_max - x_min, 0.75 * (y_max - y_min), 2.0)
    center_x = 0.5 * (x_min + x_max)
    y1 = min(y_min, y_max - 1.1 * scale)
    x1, x2 = center_x - 0.5 * scale, center_x + 0.5 * scale
    box_y1 = int(np.clip(round(y1), 0, height - 1))
    box_y2 = int(np.clip(round(y_max), box_y1 + 1, height))
    box_x1 = int(np.clip(round(x1), 0, width - 1))
    box_x2 = int(np.clip(round(x2), box_x1 + 1, width))
    return box_y1, box_y2, box_x1, box_x2


def motion_boxes(motion, image_hw: tuple[int, int]) -> np.ndarray:
    """(n_frames, 4) face boxes (y1, y2, x1, x2), one per frame of a motion plan (`engines.base.MotionPlan`:
    `n_frames` and `landmarks(i)`).

    Lip stages want every box up front, so they come from where the rig places the landmarks
    (microseconds per frame) instead of from rendered frames.
    """
    boxes = np.empty((motion.n_frames, 4), dtype=np.int64)
    for i in range(motion.n_frames):
        boxes[i] = face_box_from_landmarks(motion.landmarks(i)[:, :2], image_hw)
    return boxes


# --- square face crops ---------------------------------------------------------------------------


class Box(NamedTuple):
    """A pixel rectangle (x0, y0, x1, y1) = (left, top, right, bottom), x1/y1 exclusive: the face kit's box
    for crops. A square crop may extend past the image only when the image is smaller than the square (or,
    for a video's crop window, at a border): the outside is edge-replicated and never pasted."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def square(cls, x0: int, y0: int, side: int) -> Box:
        return cls(x0, y0, x0 + side, y0 + side)

    @property
    def side(self) -> int:
        """The longer side (of a square: its side)."""
        return max(self.x1 - self.x0, self.y1 - self.y0)

    def squared(self) -> Box:
        """The square with this box's centre whose side is its longer side (at least 1 px)."""
        return square_around(((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2), max(self.side, 1))

    def as_list(self) -> list[int]:
        return list(self)


def _place(center: float, side: int, limit: int | None) -> int:
    """Start of a `side`-long span centred near `center`; with a `limit`, kept inside [0, limit) when it fits."""
    start = int(round(center - side / 2))
    if limit is None:
        return start
    if side <= limit:
        return min(max(start, 0), limit - side)
    return int(round((limit - side) / 2))  # larger than the image: centre it (both ends stick out)


def square_around(center_xy, side: int, image_hw: tuple[int, int] | None = None) -> Box:
    """The one square-box rule: a `side` square centred at `center_xy`; with `image_hw`, shifted (not
    clipped) to stay inside the image whenever it fits."""
    h, w = (None, None) if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
    return Box.square(_place(center_xy[0], side, w), _place(center_xy[1], side, h), side)


def square_box(lm5: np.ndarray, image_hw: tuple[int, int], min_side: int = 32) -> Box:
    """Upstream-sized square face crop from five points (`face.points.five_points` order, pixels, y down).

    The side is at most the longer image side; the square is shifted (not clipped) to stay inside the
    image whenever it fits.
    """
    pts = np.asarray(lm5, dtype=np.float64).reshape(5, 2)
    h, w = int(image_hw[0]), int(image_hw[1])
    eye_avg = (pts[0] + pts[1]) / 2
    eye_to_eye = pts[1] - pts[0]
    eye_to_mouth = (pts[3] + pts[4]) / 2 - eye_avg
    half = max(2.0 * math.hypot(*eye_to_eye), 1.8 * math.hypot(*eye_to_mouth))
    if not math.isfinite(half):
        raise ValueError("five points must be finite")
    center = eye_avg + 0.1 * eye_to_mouth
    side = int(round(min(max(2.0 * half, min_side), max(h, w))))
    return square_around(center, side, (h, w))


def extract_square(image: np.ndarray, box: Box, size: int = 256) -> np.ndarray:
    """The box's pixels resized to (size, size, 3) uint8; parts outside the image repeat its edge."""
    h, w = image.shape[:2]
    top, left = max(0, -box.y0), max(0, -box.x0)
    bottom, right = max(0, box.y1 - h), max(0, box.x1 - w)
    region = image[max(box.y0, 0):min(box.y1, h), max(box.x0, 0):min(box.x1, w)]
    if top or left or bottom or right:
        region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if box.side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=interp)


class SquarePaster:
    """Blends rendered square face crops back into one portrait through a feathered ellipse: only the
    box ∩ image changes. The mask and the in-image slices are computed once per clip."""

    def __init__(self, image: np.ndarray, box: Box, inner: float = 0.80, outer: float = 0.96):
        h, w = image.shape[:2]
        self.image = image
        self.box = box
        ys = slice(max(box.y0, 0), min(box.y1, h))
        xs = slice(max(box.x0, 0), min(box.x1, w))
        self.region = (ys.start, ys.stop, xs.start, xs.stop)
        self._cut = (slice(ys.start - box.y0, ys.stop - box.y0), slice(xs.start - box.x0, xs.stop - box.x0))
        self.mask = ellipse_mask(box.side, box.side, inner, outer)[self._cut][:, :, None]
        self._base = image[ys, xs].astype(np.float32)

    def paste(self, face: np.ndarray, onto: np.ndarray | None = None) -> np.ndarray:
        """A new frame: `onto` (default: the portrait) with `face` ((s, s, 3) uint8, any s) blended into the box."""
        big = resize_to(face, self.box.side, self.box.side)[self._cut]
        if onto is None:
            return blend_region(self.image, self.region, big, self.mask, base=self._base)
        return blend_region(onto, self.region, big, self.mask)
