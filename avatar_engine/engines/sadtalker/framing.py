"""Per-clip SadTalker math that needs no network: the face-crop geometry, the paste-back blend, driving
coefficients at the output frame rate and the MappingNet input windows.

The crop follows the geometry of upstream's `Preprocesser.align_face` (OpenTalker/SadTalker, Apache-2.0):
a square around `eye_avg + 0.1 * eye_to_mouth` whose side is `2 * max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|)`.
Unlike upstream, the square is kept square (shifted inside the image instead of clipped, so the face is
never stretched) and the rendered face is blended back through a feathered ellipse instead of
`cv2.seamlessClone` (which shifts colours and costs ~100 ms per frame at 512 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .glue import SAMPLE_RATE, SEMANTIC_RADIUS, audio_to_coeffs, transform_semantic_target

COEFF_FPS = 25  # SadTalker's audio->coefficient networks were trained on 25 fps video
SAMPLES_PER_COEFF_FRAME = SAMPLE_RATE // COEFF_FPS  # 640


# --- crop geometry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropBox:
    """A square region of the image, in integer pixels; it extends past the image only when the image
    is smaller than the square (then the outside is edge-replicated for the renderer and never pasted)."""

    x0: int
    y0: int
    side: int

    @property
    def x1(self) -> int:
        return self.x0 + self.side

    @property
    def y1(self) -> int:
        return self.y0 + self.side

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


def _place(center: float, side: int, limit: int) -> int:
    """Start of a `side`-long span centred near `center`, kept inside [0, limit) when it fits."""
    start = int(round(center - side / 2))
    if side <= limit:
        return min(max(start, 0), limit - side)
    return int(round((limit - side) / 2))  # larger than the image: centre it (both ends stick out)


def crop_box(lm5: np.ndarray, image_hw: tuple[int, int], min_side: int = 32) -> CropBox:
    """Upstream-sized square face crop from five points (`five_points_from_mesh` order, pixels, y down).

    Eye centres are points 0 and 1, the mouth corners 3 and 4. The side is at most the longer image side;
    the square is shifted (not clipped) to stay inside the image whenever it fits.
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
    return CropBox(_place(center[0], side, w), _place(center[1], side, h), side)


def extract_crop(image: np.ndarray, box: CropBox, size: int = 256) -> np.ndarray:
    """The box's pixels resized to (size, size, 3) uint8; parts outside the image repeat its edge."""
    h, w = image.shape[:2]
    top, left = max(0, -box.y0), max(0, -box.x0)
    bottom, right = max(0, box.y1 - h), max(0, box.x1 - w)
    region = image[max(box.y0, 0):min(box.y1, h), max(box.x0, 0):min(box.x1, w)]
    if top or left or bottom or right:
        region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if box.side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=interp)


def ellipse_mask(height: int, width: int, inner: float = 0.80, outer: float = 0.96) -> np.ndarray:
    """(h, w) float32 blend weights: 1 inside the inscribed ellipse scaled by `inner`, smoothstep down to 0 at
    `outer` (radii relative to the half sides), 0 beyond (so the box's edges and corners stay original)."""
    if not 0 < inner < outer:
        raise ValueError("need 0 < inner < outer")
    ys = (2 * np.arange(height) + 1 - height) / height  # pixel centres in (-1, 1), exactly mirror-symmetric
    xs = (2 * np.arange(width) + 1 - width) / width
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    u = np.clip((outer - r) / (outer - inner), 0.0, 1.0)
    return (u * u * (3.0 - 2.0 * u)).astype(np.float32)


class FacePaster:
    """Blends rendered face crops back into the portrait: only the box ∩ image changes, through a feathered
    ellipse. The mask and the in-image slices are computed once per clip."""

    def __init__(self, image: np.ndarray, box: CropBox, inner: float = 0.80, outer: float = 0.96):
        h, w = image.shape[:2]
        self.image = image
        self.box = box
        self.ys = slice(max(box.y0, 0), min(box.y1, h))
        self.xs = slice(max(box.x0, 0), min(box.x1, w))
        self._cut = (slice(self.ys.start - box.y0, self.ys.stop - box.y0),
                     slice(self.xs.start - box.x0, self.xs.stop - box.x0))
        self.mask = ellipse_mask(box.side, box.side, inner, outer)[self._cut][:, :, None]
        self._base = image[self.ys, self.xs].astype(np.float32)

    def paste(self, face: np.ndarray) -> np.ndarray:
        """A new frame: the portrait with `face` ((s, s, 3) uint8, any s) blended into the box."""
        side = self.box.side
        interp = cv2.INTER_AREA if face.shape[0] > side else cv2.INTER_CUBIC
        big = cv2.resize(face, (side, side), interpolation=interp)[self._cut]
        out = self.image.copy()
        blended = self._base + (big.astype(np.float32) - self._base) * self.mask
        out[self.ys, self.xs] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out


# --- coefficients at the output frame rate -------------------------------------------------------------


def coeff_frames_for(num_samples: int) -> int:
    """25 fps coefficient frames covering the whole 16 kHz clip (the last partial frame included)."""
    return max(1, math.ceil(num_samples / SAMPLES_PER_COEFF_FRAME - 1e-9))


def pad_audio(wav16k: np.ndarray) -> np.ndarray:
    """Zero-pad to a whole number of 25 fps frames so the clip's tail gets its own coefficients."""
    wav = np.asarray(wav16k, dtype=np.float32).reshape(-1)
    need = coeff_frames_for(len(wav)) * SAMPLES_PER_COEFF_FRAME
    return np.pad(wav, (0, need - len(wav))) if need > len(wav) else wav


def resample_coeffs(coeffs: np.ndarray, n_frames: int, fps: float, src_fps: float = COEFF_FPS) -> np.ndarray:
    """(T, C) coefficients at `src_fps` -> (n_frames, C) at `fps`: output frame i samples time i/fps, linearly
    interpolated and clamped to the last frame. Exact copies when fps == src_fps."""
    coeffs = np.asarray(coeffs, dtype=np.float32)
    t = coeffs.shape[0]
    pos = np.minimum(np.arange(n_frames, dtype=np.float64) * (src_fps / float(fps)), t - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, t - 1)
    frac = (pos - lo).astype(np.float32)[:, None]
    return (coeffs[lo] * (1 - frac) + coeffs[hi] * frac).astype(np.float32)


def driving_coeffs(
    wav16k: np.ndarray,
    ref_coeff70: np.ndarray,
    audio2exp_net,
    audio2pose_net,
    *,
    fps: float,
    n_frames: int,
    pose_style: int = 0,
    seed: int = 0,
    still: bool = False,
    expression_scale: float = 1.0,
) -> np.ndarray:
    """(n_frames, 70) driving coefficients for video at `fps`: computed at 25 fps (what the networks learned)
    over the zero-padded clip, then sampled at the output frame times."""
    coeffs25 = audio_to_coeffs(pad_audio(wav16k), ref_coeff70, audio2exp_net, audio2pose_net, fps=COEFF_FPS,
                               pose_style=pose_style, seed=seed, still=still, expression_scale=expression_scale)
    return resample_coeffs(coeffs25, n_frames, fps)


def mapping_windows(coeffs: np.ndarray, start: int, stop: int, extra: np.ndarray | None = None,
                    radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """MappingNet inputs (stop - start, C [+ len(extra)], 2*radius+1) float32 for frames start..stop-1 of the
    whole sequence (windows clamp at the clip's ends). `extra` (the `full` mode's crop params) is appended
    to every frame, as upstream does for the 73-channel MappingNet."""
    coeffs = np.asarray(coeffs, dtype=np.float32)
    if extra is not None:
        tail = np.broadcast_to(np.asarray(extra, dtype=np.float32).reshape(1, -1), (coeffs.shape[0], np.size(extra)))
        coeffs = np.concatenate([coeffs, tail], axis=1)
    return np.stack([transform_semantic_target(coeffs, i, radius) for i in range(start, stop)]).astype(np.float32)
