"""Where MuseTalk crops the face and how it pastes the generated one back, without its helper models.

Upstream finds the face with S3FD and DWPose (68 of its 133 whole-body points) and masks the jaw with BiSeNet
face parsing; all three carry research-only weights or break on current torch. Here:

* the crop box follows upstream's rule (`preprocessing.get_landmark_and_bbox`, v15) on MediaPipe face-mesh
  points placed in the 68-point roles it reads: x from the leftmost to the rightmost point, y2 at the lowest
  point (the chin), y1 = max(0, nose - (y2 - nose)) with `nose` the lower nose bridge (68-point index 29)
  moved by `bbox_shift`; then `extra_margin` (10) px added below, clamped to the image. Upstream falls back to
  the detector's box when the landmark box is empty or leaves the image on the left; the mesh's own box
  plays that part here.
* the mask: upstream's BiSeNet parsing is replaced by the face-mesh oval filled at the crop's size; the rest
  of upstream's "jaw" mask steps are kept exactly (cut to the face box, upper half zeroed, Gaussian blur
  with k = 0.05 W, or 0.1 W on the real-time path) and so is the paste (PIL's integer alpha blend of the
  1.5x expanded square crop, parts outside the image dropped). With upstream's mask these functions give
  upstream's pixels exactly (golden_geometry).
Boxes are (x1, y1, x2, y2) as upstream's; images are BGR uint8 as upstream's cv2 path.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from ...face.regions import FACE_OVAL, JAW_68, NOSE_BRIDGE_68_29

NOSE_INDEX_68 = 29
EXTRA_MARGIN = 10
MESH_NOSE_INDEX = len(JAW_68)  # where `mesh_roles` puts dlib 29 (face/regions.py has the mesh indices)

Box = tuple[int, int, int, int]


def mesh_roles(points: np.ndarray) -> np.ndarray:
    """(468+, 2+) mesh points -> (18, 2): the 17 jaw roles (dlib 0-16), then the lower nose bridge (dlib 29)."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    return np.concatenate([xy[list(JAW_68)], xy[list(NOSE_BRIDGE_68_29)].mean(axis=0, keepdims=True)])


def landmark_box(landmarks: np.ndarray, bbox_shift: int = 0, nose: int = NOSE_INDEX_68) -> Box | None:
    """Upstream's box from landmarks truncated toward zero (as its int32 cast), or None where it would take
    the detector's box; `nose` is the index of the lower nose-bridge point (68-point index 29)."""
    lm = np.asarray(landmarks).astype(np.int32)
    nose_y = int(lm[nose, 1]) + int(bbox_shift)
    bottom = int(lm[:, 1].max())
    y1 = max(0, nose_y - (bottom - nose_y))
    x1, x2 = int(lm[:, 0].min()), int(lm[:, 0].max())
    if bottom - y1 <= 0 or x2 - x1 <= 0 or x1 < 0:
        return None
    return x1, y1, x2, bottom


def crop_box(landmarks: np.ndarray, fallback: Box, height: int, *, bbox_shift: int = 0,
             extra_margin: int = EXTRA_MARGIN, nose: int = NOSE_INDEX_68) -> Box:
    """The v15 crop box: the landmark box (or `fallback`), extended `extra_margin` px down, clamped to H."""
    x1, y1, x2, y2 = landmark_box(landmarks, bbox_shift, nose) or tuple(int(v) for v in fallback)
    return x1, y1, x2, min(y2 + int(extra_margin), int(height))


def mesh_crop_box(points: np.ndarray, image_hw: tuple[int, int], *, bbox_shift: int = 0,
                  extra_margin: int = EXTRA_MARGIN) -> Box:
    """The crop box of a face from its mesh points; the mesh's bounding box stands in for S3FD's."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    height, width = image_hw
    lo = np.clip(np.floor(xy.min(axis=0)), 0, [width - 1, height - 1]).astype(int)
    hi = np.clip(np.ceil(xy.max(axis=0)), lo + 1, [width, height]).astype(int)
    box = crop_box(mesh_roles(xy), (lo[0], lo[1], hi[0], hi[1]), height, bbox_shift=bbox_shift,
                   extra_margin=extra_margin, nose=MESH_NOSE_INDEX)
    x1, y1, x2, y2 = box
    return max(x1, 0), max(y1, 0), min(max(x2, x1 + 1), width), min(max(y2, y1 + 1), height)


def crop_face(frame_bgr: np.ndarray, box: Box, size: int = 256) -> np.ndarray:
    """The box's pixels resized to size x size (aspect ignored) with cv2's Lanczos-4, as upstream."""
    x1, y1, x2, y2 = box
    return cv2.resize(np.ascontiguousarray(frame_bgr[y1:y2, x1:x2]), (size, size), interpolation=cv2.INTER_LANCZOS4)


def face_to_box(face_bgr: np.ndarray, box: Box) -> np.ndarray:
    """The generated 256 px face resized to the box (cv2's default bilinear), as upstream pastes it."""
    x1, y1, x2, y2 = box
    return cv2.resize(np.ascontiguousarray(face_bgr), (x2 - x1, y2 - y1))


def expanded_box(box: Box, expand: float = 1.5) -> tuple[Box, int]:
    """Upstream's `get_crop_box`: a square of half side int(max(w, h) // 2 * expand) around the box centre."""
    x, y, x1, y1 = box
    xc, yc = (x + x1) // 2, (y + y1) // 2
    s = int(max(x1 - x, y1 - y) // 2 * expand)
    return (xc - s, yc - s, xc + s, yc + s), s


def blur_kernel(width: int, ratio: float) -> int:
    return int(ratio * width // 2 * 2) + 1


def resize_parsing_mask(mask: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """A face-parsing mask resized as upstream does (PIL's default filter for 'L' images: bicubic)."""
    return np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize(size_wh))


def jaw_mask(mask_crop: np.ndarray, box: Box, crop: Box, *, upper_ratio: float = 0.5,
             blur_ratio: float = 0.05) -> np.ndarray:
    """Upstream's 'jaw' mask of the expanded crop: the mask inside the face box only, its upper half zeroed,
    then a Gaussian blur (k = int(blur_ratio * W // 2 * 2) + 1, sigma from k)."""
    x, y, x1, y1 = box
    x_s, y_s = crop[0], crop[1]
    height, width = mask_crop.shape[:2]
    out = np.zeros((height, width), dtype=np.uint8)
    out[y - y_s:y1 - y_s, x - x_s:x1 - x_s] = mask_crop[y - y_s:y1 - y_s, x - x_s:x1 - x_s]
    out[:int(height * upper_ratio)] = 0
    k = blur_kernel(width, blur_ratio)
    return cv2.GaussianBlur(out, (k, k), 0)


def oval_mask(points: np.ndarray, crop: Box) -> np.ndarray:
    """The face-mesh oval filled (255) at the expanded crop's size: what stands in for BiSeNet's parsing."""
    x_s, y_s, x_e, y_e = crop
    poly = np.asarray(points, dtype=np.float64)[list(FACE_OVAL), :2] - [x_s, y_s]
    mask = np.zeros((y_e - y_s, x_e - x_s), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255, lineType=cv2.LINE_AA)
    return mask


def crop_with_zeros(body: np.ndarray, crop: Box) -> np.ndarray:
    """`body[crop]` with the parts outside the image black (PIL's crop)."""
    x_s, y_s, x_e, y_e = crop
    height, width = body.shape[:2]
    out = np.zeros((y_e - y_s, x_e - x_s, body.shape[2]), dtype=body.dtype)
    ys, ye, xs, xe = max(y_s, 0), min(y_e, height), max(x_s, 0), min(x_e, width)
    if ye > ys and xe > xs:
        out[ys - y_s:ye - y_s, xs - x_s:xe - x_s] = body[ys:ye, xs:xe]
    return out


def pil_blend(top: np.ndarray, bottom: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """PIL's integer paste through an 'L' mask: t = top*m + bottom*(255-m) + 128; ((t >> 8) + t) >> 8."""
    m = alpha.astype(np.int32)[..., None]
    t = top.astype(np.int32) * m + bottom.astype(np.int32) * (255 - m) + 128
    return (((t >> 8) + t) >> 8).astype(np.uint8)


def paste_face(body: np.ndarray, face: np.ndarray, box: Box, crop: Box, mask: np.ndarray) -> np.ndarray:
    """A copy of `body` with `face` (already box-sized) put into the crop and the crop blended through
    `mask` (the blurred jaw mask at the crop's size); only crop ∩ image changes."""
    x, y, x1, y1 = box
    x_s, y_s, x_e, y_e = crop
    large = crop_with_zeros(body, crop)
    large[y - y_s:y1 - y_s, x - x_s:x1 - x_s] = face
    height, width = body.shape[:2]
    ys, ye, xs, xe = max(y_s, 0), min(y_e, height), max(x_s, 0), min(x_e, width)
    out = body.copy()
    cut = (slice(ys - y_s, ye - y_s), slice(xs - x_s, xe - x_s))
    out[ys:ye, xs:xe] = pil_blend(large[cut], body[ys:ye, xs:xe], mask[cut])
    return out


def region(crop: Box, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the part of the image a paste through `crop` can change."""
    x_s, y_s, x_e, y_e = crop
    return max(y_s, 0), min(y_e, image_hw[0]), max(x_s, 0), min(x_e, image_hw[1])
