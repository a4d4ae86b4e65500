"""GFPGAN face restoration around the network: align to the FFHQ-512 template, restore, paste back.

Replaces GFPGANer + facexlib (RetinaFace, ParseNet) with five points derived from MediaPipe FaceMesh
landmarks and a fixed feathered ellipse as the paste mask. Everything that only depends on the face
geometry (similarity transform, its inverse, the pasted region and its alpha) is computed once per
distinct set of points and reused, so a still portrait costs one network pass per frame and nothing
else, and identical frames give identical output (no noise resampling, no per-frame jitter).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from ...errors import AvatarError
from ...face.blend import blend_region, smoothstep
from ...runtime.precision import inference_autocast

FACE_SIZE = 512

# facexlib FaceRestoreHelper's 5-point template for 512x512 crops (x, y): eye at smaller x, other eye,
# nose tip, mouth corner at smaller x, other mouth corner.
FFHQ_512_TEMPLATE = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

# facexlib fills the aligned crop outside the frame with (135, 133, 132) BGR.
BORDER_RGB = (132, 133, 135)

# Paste mask in template coordinates: an ellipse from forehead to chin, feathered over its outer
# fraction so the seam is invisible. Kept inside the 512 crop so the crop's border never shows.
_MASK_CENTER = (256.0, 280.0)
_MASK_AXES = (172.0, 215.0)
_MASK_FEATHER = 0.2


def _template_mask() -> np.ndarray:
    """(512, 512) float32 alpha in template space: 1 inside the face ellipse, smooth ramp to 0."""
    ys, xs = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE].astype(np.float32)
    radius = np.sqrt(((xs - _MASK_CENTER[0]) / _MASK_AXES[0]) ** 2 + ((ys - _MASK_CENTER[1]) / _MASK_AXES[1]) ** 2)
    return smoothstep((1.0 - radius) / _MASK_FEATHER).astype(np.float32)


@dataclass(frozen=True)
class _Geometry:
    """Per (points, frame size) constants: forward warp, and where/how strongly the face is pasted."""

    affine: np.ndarray  # (2, 3) frame -> template
    paste_affine: np.ndarray  # (2, 3) template -> region of interest in the frame
    region: tuple[int, int, int, int]  # y0, y1, x0, x1 in the frame
    alpha: np.ndarray  # (h, w, 1) float32 paste mask over `region`


class FaceRestorer:
    """Restore one face per frame with a GFPGAN network (`avatar_engine.stages.restore.nets.load_gfpgan`).

    `weight` in [0, 1] blends restored and original face (1 = fully restored, 0 = frame untouched).
    `batch_size` faces go through the network at once; default 1 on CPU (larger batches measured
    slower per face there) and 8 on GPU.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", weight: float = 1.0,
                 batch_size: int | None = None, cache_size: int = 16, cpu_bf16: bool = False):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._dtype = next(self.model.parameters()).dtype  # float16 models on GPU work too
        self.weight = float(weight)
        self.cpu_bf16 = cpu_bf16
        if batch_size is None:
            batch_size = 1 if self.device.type == "cpu" else 8
        self.batch_size = max(1, int(batch_size))
        self._mask = _template_mask()
        ys, xs = np.nonzero(self._mask > 0)
        # Corners of the mask's support, mapped back to each frame to bound the pasted region.
        self._mask_corners = np.array(
            [[xs.min(), ys.min()], [xs.max(), ys.min()], [xs.min(), ys.max()], [xs.max(), ys.max()]], np.float64
        )
        self._geometry: OrderedDict[tuple, _Geometry] = OrderedDict()
        self._cache_size = cache_size

    def restore(self, frame: np.ndarray, five_points: np.ndarray) -> np.ndarray:
        """Return a copy of `frame` (H, W, 3) uint8 RGB with the face at `five_points` restored."""
        return self.restore_batch([frame], [five_points])[0]

    def restore_batch(self, frames: Sequence[np.ndarray], five_points: Sequence[np.ndarray] | np.ndarray
                      ) -> list[np.ndarray]:
        """Restore many frames; `five_points` is one (5, 2) array per frame, or a single (5, 2) for all."""
        points = np.asarray(five_points, dtype=np.float32)
        if points.shape == (5, 2):
            points_per_frame = [points] * len(frames)
        elif points.shape == (len(frames), 5, 2):
            points_per_frame = list(points)
        else:
            raise ValueError(f"expected (5, 2) or ({len(frames)}, 5, 2) points, got {points.shape}")
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"expected (H, W, 3) uint8 RGB frames, got {frame.shape} {frame.dtype}")
        if self.weight == 0.0:
            return [frame.copy() for frame in frames]

        geometries = [self._geometry_for(p, f.shape[:2]) for p, f in zip(points_per_frame, frames)]
        results = []
        for start in range(0, len(frames), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(frames)))
            crops = [
                cv2.warpAffine(frames[i], geometries[i].affine, (FACE_SIZE, FACE_SIZE),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB)
                for i in chunk
            ]
            restored = self._run_network(np.stack(crops))
            results += [self._paste(frames[i], face, geometries[i]) for i, face in zip(chunk, restored)]
        return results

    @torch.inference_mode()
    def _run_network(self, crops: np.ndarray) -> np.ndarray:
        """(b, 512, 512, 3) uint8 -> restored (b, 512, 512, 3) uint8, as GFPGANer normalises and rounds."""
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float()
        x = (x / 255.0 * 2.0 - 1.0).to(self._dtype)
        with inference_autocast(self.device, cpu_bf16=self.cpu_bf16) if self._dtype == torch.float32 else nullcontext():
            out, _ = self.model(x, return_rgb=False, randomize_noise=False)
        out = ((out.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
        return out.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _paste(self, frame: np.ndarray, face: np.ndarray, geometry: _Geometry) -> np.ndarray:
        y0, y1, x0, x1 = geometry.region
        if y1 <= y0 or x1 <= x0:
            return frame.copy()
        face_back = cv2.warpAffine(face, geometry.paste_affine, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return blend_region(frame, geometry.region, face_back, self.weight * geometry.alpha)

    def _geometry_for(self, points: np.ndarray, frame_hw: tuple[int, int]) -> _Geometry:
        key = (points.tobytes(), frame_hw)
        cached = self._geometry.get(key)
        if cached is not None:
            self._geometry.move_to_end(key)
            return cached
        geometry = self._build_geometry(points, frame_hw)
        self._geometry[key] = geometry
        if len(self._geometry) > self._cache_size:
            self._geometry.popitem(last=False)
        return geometry

    def _build_geometry(self, points: np.ndarray, frame_hw: tuple[int, int]) -> _Geometry:
        affine, _ = cv2.estimateAffinePartial2D(points, FFHQ_512_TEMPLATE, method=cv2.LMEDS)
        if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:, :2])) < 1e-8:
            raise AvatarError("no_face", "the five face points are degenerate; the face cannot be aligned")
        inverse = cv2.invertAffineTransform(affine)
        height, width = frame_hw
        # Region of the frame the feathered mask can touch, with a 1-2 px margin for interpolation.
        mapped = self._mask_corners @ inverse[:, :2].T + inverse[:, 2]
        x0 = int(np.clip(np.floor(mapped[:, 0].min()) - 1, 0, width))
        x1 = int(np.clip(np.ceil(mapped[:, 0].max()) + 2, 0, width))
        y0 = int(np.clip(np.floor(mapped[:, 1].min()) - 1, 0, height))
        y1 = int(np.clip(np.ceil(mapped[:, 1].max()) + 2, 0, height))
        paste_affine = inverse.copy()
        paste_affine[:, 2] -= (x0, y0)
        if y1 > y0 and x1 > x0:
            alpha = cv2.warpAffine(self._mask, paste_affine, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        else:
            alpha = np.zeros((0, 0), np.float32)
        return _Geometry(affine=affine, paste_affine=paste_affine, region=(y0, y1, x0, x1), alpha=alpha[:, :, None])
