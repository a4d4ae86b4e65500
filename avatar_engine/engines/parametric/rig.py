"""A face rig built once per clip from the 468 landmarks: per-frame warps cost a few array ops.

Each deformation (jaw open, lip spread, rounding, rest closure, blink) is a displacement of the
landmarks, spread to a dense field by piecewise-linear interpolation over a triangulation of the
landmarks and fixed anchors. A frame's forward field is a weighted sum of these fields plus a
rigid head motion that fades out before the background. The face's own deformation is inverted by one
fixed-point step and resampled only on the small box its active fields cover; the head motion's
inverse is exact on a coarse grid (it is smooth) and applied with one `cv2.remap` of the head region,
skipped when the head does not move, so a rest frame of a still head is the portrait itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import sparse
from scipy.spatial import Delaunay

from ...face import regions as R
from ...face.blend import smoothstep, smoothstep1

BASES = ("close", "open", "width", "round", "blink")
_HEAD_STEP = 8  # px between exact samples of the head-motion map


@dataclass
class _Field:
    """A dense forward displacement field on a sub-rectangle of the head ROI."""

    y0: int
    x0: int
    data: np.ndarray  # (h, w, 2) float32


class FaceRig:
    """Warps one portrait. `deform(coeffs, head)` returns the frame (full image, RGB uint8)."""

    def __init__(self, image: np.ndarray, points: np.ndarray):
        self.image = image
        self.points = points[:, :2].astype(np.float64)
        h_img, w_img = image.shape[:2]
        self.origin, self.right, self.down, self.face_h = R.face_frame(points)
        rel = self.points - self.origin
        self._u = rel @ self.right / self.face_h
        self._v = rel @ self.down / self.face_h
        self.mouth_w = float(np.linalg.norm(self.points[R.MOUTH_CORNERS[1]] - self.points[R.MOUTH_CORNERS[0]]))

        # head region: where rigid head motion applies, fading to zero before the background
        center = (self.points[R.FOREHEAD] + self.points[R.CHIN]) / 2 - 0.08 * self.face_h * self.down
        self.head_center = center
        reach = 1.55 * 0.62 * self.face_h
        self.roi = self._clip_box(center[0] - reach, center[1] - reach, center[0] + reach, center[1] + reach * 1.1,
                                  w_img, h_img)
        y0, y1, x0, x1 = self.roi
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self._grid = np.dstack([xs, ys])
        self._local_grid = self._grid - np.array([x0, y0], dtype=np.float32)

        self.landmark_disp = self._landmark_displacements()
        self._fields = self._dense_fields()
        self._warp_fill = self._lips_filled()

    def _lips_filled(self) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """What the face's deformation samples around the mouth: the space between the inner lips (and
        the teeth's edge that shows just past the landmarks' lip line) filled from the lips around it,
        as (box, patch). Where the lips close over teeth, the warp squeezes that space into a line
        that its one-step inverse cannot resolve exactly, and where the jaw drops it stretches the
        lip's edge: sampled from here, those pixels are lip, never teeth. (The mouth's inside is
        painted over afterwards, `paint.py`.)"""
        outline = np.concatenate([self.points[R.LIPS_INNER_UPPER], self.points[R.LIPS_INNER_LOWER][::-1][1:-1]])
        mask = np.zeros(self.image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32).reshape(-1, 1, 2)], 255, cv2.LINE_8, 4)
        if not mask.any():
            return None
        reach = max(1, int(round(0.02 * self.face_h)))
        mask = cv2.dilate(mask, np.ones((2 * reach + 1, 1), np.uint8))  # up and down only: corners stay skin
        ys, xs = np.nonzero(mask)
        pad = 6
        y0, y1 = max(0, ys.min() - pad), min(mask.shape[0], ys.max() + pad + 1)
        x0, x1 = max(0, xs.min() - pad), min(mask.shape[1], xs.max() + pad + 1)
        patch = cv2.inpaint(np.ascontiguousarray(self.image[y0:y1, x0:x1]), mask[y0:y1, x0:x1], 3, cv2.INPAINT_TELEA)
        return (int(y0), int(y1), int(x0), int(x1)), patch.astype(np.float32)

    def _source(self, coeffs: dict[str, float]) -> np.ndarray:
        """The image the face's deformation samples: the portrait, its lip-filled mouth faded in as the
        mouth moves (no jump between a rest frame and the first moving one)."""
        if self._warp_fill is None:
            return self.image
        activity = sum(abs(float(coeffs.get(name, 0.0))) for name in ("close", "open", "width", "round"))
        k = smoothstep1(activity / 0.15)
        if k <= 0:
            return self.image
        (y0, y1, x0, x1), patch = self._warp_fill
        # one full-size buffer per rig: only the patch changes from frame to frame (no full copy per frame)
        source = self.__dict__.get("_source_buffer")
        if source is None:
            source = self._source_buffer = self.image.copy()
            self._source_original = self.image[y0:y1, x0:x1].astype(np.float32)
        original = self._source_original
        source[y0:y1, x0:x1] = np.clip(original + (patch - original) * k + 0.5, 0, 255).astype(np.uint8)
        return source

    def _head_weight(self, dx, dy):
        """1 on the head (an ellipse around `head_center`), fading to 0 by 1.5x its radius."""
        r = np.sqrt((dx / (0.62 * self.face_h)) ** 2 + (dy / (0.75 * self.face_h)) ** 2)
        return 1.0 - smoothstep((r - 1.0) / 0.5)

    @staticmethod
    def _clip_box(x0, y0, x1, y1, w, h):
        return (int(max(0, np.floor(y0))), int(min(h, np.ceil(y1))), int(max(0, np.floor(x0))), int(min(w, np.ceil(x1))))

    # -- per-landmark displacements at coefficient 1 --------------------------------------
    def _landmark_displacements(self) -> dict[str, np.ndarray]:
        p, u, v, fh, down, right = self.points, self._u, self._v, self.face_h, self.down, self.right
        n = len(p)
        upper = [i for i in R.LIPS_INNER_UPPER + R.LIPS_OUTER_UPPER if i not in R.MOUTH_CORNERS]
        lower = [i for i in R.LIPS_INNER_LOWER + R.LIPS_OUTER_LOWER if i not in R.MOUTH_CORNERS]
        lips = upper + lower + list(R.MOUTH_CORNERS)
        mw_n = self.mouth_w / fh
        out = {}

        # rest closure: inner lips meet at their midline (portraits often smile with parted lips)
        close = np.zeros((n, 2))
        for k, (a, b) in enumerate(zip(R.LIPS_INNER_UPPER, R.LIPS_INNER_LOWER)):
            if a in R.MOUTH_CORNERS or b in R.MOUTH_CORNERS:
                continue
            gap = float((p[b] - p[a]) @ down)
            if gap > 0:
                close[a] = 0.5 * gap * down
                close[b] = -0.5 * gap * down
                close[R.LIPS_OUTER_UPPER[k]] = 0.45 * gap * down
                close[R.LIPS_OUTER_LOWER[k]] = -0.45 * gap * down
        out["close"] = close

        # jaw drop: everything below the lip line moves down, less towards the ears
        lateral = np.clip(1.0 - (np.abs(u) - 0.2) / 0.22, 0.0, 1.0)
        ramp = 0.3 + 0.7 * smoothstep(v / 0.1)
        w = np.where(v > 0, ramp * lateral, 0.0)
        # the lower lip drops most in the middle: an open mouth is an oval, not a slot
        w[lower] = 0.45 + 0.55 * np.clip(1.0 - (2 * u[lower] / mw_n) ** 2, 0.0, 1.0)
        w[list(R.MOUTH_CORNERS)] = 0.4
        w[upper] = -0.1
        out["open"] = (0.11 * fh) * w[:, None] * down[None, :]

        # spread / rounding: horizontal scaling of the lips about the mouth centre
        g = np.exp(-((u / (0.7 * mw_n)) ** 2 + (v / (0.45 * mw_n)) ** 2))
        g[lips] = 1.0
        out["width"] = (0.2 * u * fh * g)[:, None] * right[None, :]
        across = np.clip(1.0 - (2 * u / mw_n) ** 2, 0.0, None)
        pucker = np.zeros(n)
        pucker[upper] = -0.015 * fh * across[upper]
        pucker[lower] = 0.025 * fh * across[lower]
        out["round"] = (-0.25 * u * fh * g)[:, None] * right[None, :] + pucker[:, None] * down[None, :]

        # blink: upper lids come down onto the lower ones; the skin above follows, fading
        blink = np.zeros((n, 2))
        for up_ids, low_ids, (c0, c1) in ((R.EYE_R_UPPER, R.EYE_R_LOWER, R.EYE_R_CORNERS),
                                          (R.EYE_L_UPPER, R.EYE_L_LOWER, R.EYE_L_CORNERS)):
            lid = p[low_ids] - p[up_ids]
            taper = np.ones(len(up_ids))
            taper[[0, -1]] = 0.7
            blink[up_ids] = 0.92 * lid * taper[:, None]
            blink[low_ids] = -0.08 * lid * taper[:, None]
            eye_w = float(np.linalg.norm(p[c1] - p[c0]))
            lid_x = (p[up_ids] - p[c0]) @ right
            others = np.setdiff1d(np.arange(n), np.r_[up_ids, low_ids, [c0, c1]])
            ox = (p[others] - p[c0]) @ right
            inside = (ox > -0.15 * eye_w) & (ox < 1.15 * eye_w)
            lid_y = np.interp(ox, np.sort(lid_x), ((p[up_ids] @ down))[np.argsort(lid_x)])
            above = lid_y - p[others] @ down  # > 0 above the upper lid
            amount = np.interp(ox, np.sort(lid_x), (np.linalg.norm(blink[up_ids], axis=1))[np.argsort(lid_x)])
            fade = np.where((above > 0) & inside, np.exp(-above / (0.28 * eye_w)), 0.0)
            blink[others] += (0.75 * amount * fade)[:, None] * down[None, :]
        out["blink"] = blink
        return out

    # -- dense fields ---------------------------------------------------------------------
    def _dense_fields(self) -> dict[str, _Field]:
        y0, y1, x0, x1 = self.roi
        lo, hi = self.points.min(0), self.points.max(0)
        pad = 0.22 * self.face_h
        fy0, fy1, fx0, fx1 = self._clip_box(lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad, x1, y1)
        fy0, fx0 = max(fy0, y0), max(fx0, x0)
        # fixed anchors on the face-box border keep the deformation local
        bx = np.linspace(fx0, fx1 - 1, 12)
        by = np.linspace(fy0, fy1 - 1, 12)
        anchors = np.unique(np.concatenate([
            np.stack([bx, np.full_like(bx, fy0)], 1), np.stack([bx, np.full_like(bx, fy1 - 1)], 1),
            np.stack([np.full_like(by, fx0), by], 1), np.stack([np.full_like(by, fx1 - 1), by], 1)]), axis=0)
        verts = np.concatenate([self.points, anchors])
        tri = Delaunay(verts)
        ys, xs = np.mgrid[fy0:fy1, fx0:fx1]
        pix = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        simplex = self._rasterize(tri, fx0, fy0, fx1 - fx0, fy1 - fy0).ravel()
        ok = simplex >= 0
        bary = self._barycentric(verts[tri.simplices[simplex[ok]]], pix[ok])
        rows = np.repeat(np.flatnonzero(ok), 3)
        interp = sparse.csr_matrix((bary.ravel(), (rows, tri.simplices[simplex[ok]].ravel())),
                                   shape=(len(pix), len(verts)))
        fields = {}
        n_anchor = len(anchors)
        for name, disp in self.landmark_disp.items():
            full = np.concatenate([disp, np.zeros((n_anchor, 2))])
            dense = np.asarray(interp @ full, dtype=np.float32).reshape(fy1 - fy0, fx1 - fx0, 2)
            mag = np.abs(dense).max(axis=2)
            rows_nz, cols_nz = np.nonzero(mag > 0.02)
            if rows_nz.size == 0:
                continue
            r0, r1, c0, c1 = rows_nz.min(), rows_nz.max() + 1, cols_nz.min(), cols_nz.max() + 1
            fields[name] = _Field(fy0 - y0 + r0, fx0 - x0 + c0, np.ascontiguousarray(dense[r0:r1, c0:c1]))
        return fields

    @staticmethod
    def _barycentric(corners: np.ndarray, pix: np.ndarray) -> np.ndarray:
        """Weights of each pixel's three triangle corners (closed form; `Delaunay.transform`
        goes through LAPACK per triangle and is very slow on some BLAS builds)."""
        a, e1, e2 = corners[:, 0], corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
        d = pix - a
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)
        l1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
        l2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
        return np.column_stack([1 - l1 - l2, l1, l2])

    @staticmethod
    def _rasterize(tri: Delaunay, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Triangle index per pixel (-1 outside); much faster than `Delaunay.find_simplex`."""
        index = np.full((h, w), -1, np.int32)
        shift = 4
        corners = np.round((tri.points[tri.simplices] - [x0, y0]) * (1 << shift)).astype(np.int32)
        for k, triangle in enumerate(corners):
            cv2.fillConvexPoly(index, triangle, k, cv2.LINE_8, shift)
        return index

    # -- per frame ------------------------------------------------------------------------
    def _head_affine(self, roll_deg: float, tx: float, ty: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
        a = np.deg2rad(roll_deg)
        m = (1 + scale) * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) - np.eye(2)
        t = (tx * self.right + ty * self.down) * self.face_h
        return m, t

    def landmarks_at(self, coeffs: dict[str, float], head=(0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
        """Where the landmarks end up for these coefficients (used to paint the mouth)."""
        pts = self.points.copy()
        for name, c in coeffs.items():
            if c:
                pts += c * self.landmark_disp[name]
        if not any(head):  # no head motion: the rigid part is exactly zero
            return pts
        m, t = self._head_affine(*head)
        rel = pts - self.head_center
        w = self._head_weight(rel[:, 0], rel[:, 1])
        return pts + w[:, None] * (rel @ m.T + t)

    def local_field(self, coeffs: dict[str, float]) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """The face's own deformation (mouth, lids) on the smallest ROI box holding every active field:
        ((y0, y1, x0, x1) in ROI coordinates, forward field), or None when nothing moves."""
        active = [(self._fields[name], float(c)) for name, c in coeffs.items() if c and name in self._fields]
        if not active:
            return None
        y0 = min(f.y0 for f, _ in active)
        x0 = min(f.x0 for f, _ in active)
        y1 = max(f.y0 + f.data.shape[0] for f, _ in active)
        x1 = max(f.x0 + f.data.shape[1] for f, _ in active)
        field = np.zeros((y1 - y0, x1 - x0, 2), np.float32)
        for f, c in active:
            h, w = f.data.shape[:2]
            view = field[f.y0 - y0:f.y0 - y0 + h, f.x0 - x0:f.x0 - x0 + w]
            cv2.scaleAdd(f.data, c, view, dst=view)
        return (y0, y1, x0, x1), field

    def _box_grids(self, by0: int, by1: int, bx0: int, bx1: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of an ROI box, relative to the box and absolute (cached: the set of
        active fields, hence the box, changes rarely)."""
        key = (by0, by1, bx0, bx1)
        cache = self.__dict__.setdefault("_grids", {})
        if key not in cache:
            absolute = np.ascontiguousarray(self._grid[by0:by1, bx0:bx1])
            cache.clear()
            cache[key] = (np.ascontiguousarray(self._local_grid[by0:by1, bx0:bx1] - np.array([bx0, by0], np.float32)),
                          absolute)
        return cache[key]

    def deform_local(self, coeffs: dict[str, float]) -> np.ndarray:
        """The portrait with the face's own deformation (no head motion): a new full-size image. Only
        the box the active fields cover is resampled; with nothing active it is the portrait exactly."""
        frame = self.image.copy()
        local = self.local_field(coeffs)
        if local is None:
            return frame
        (by0, by1, bx0, bx1), field = local
        grid, absolute = self._box_grids(by0, by1, bx0, bx1)
        # one fixed-point step inverts the forward field far better than negating it
        guess = grid - field
        at_source = cv2.remap(field, guess, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        src = absolute - at_source
        ry0, _, rx0, _ = self.roi
        frame[ry0 + by0:ry0 + by1, rx0 + bx0:rx0 + bx1] = cv2.remap(
            self._source(coeffs), src, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return frame

    def _head_map(self, head) -> np.ndarray:
        """Where each ROI pixel of the moved head comes from (absolute x, y), for a rigid head pose that
        fades out before the background. The motion is smooth, so its one-step inverse is evaluated
        exactly on a grid of `_HEAD_STEP` px and upsampled (sub-0.01 px error), not per pixel."""
        m, t = self._head_affine(*head)
        y0, y1, x0, x1 = self.roi
        step = _HEAD_STEP
        gh, gw = -(-(y1 - y0) // step), -(-(x1 - x0) // step)
        pts, rel, weight = self._head_samples(gh, gw)
        first = weight * (rel @ m.T + t)
        rel = (pts - first) - self.head_center
        src = pts - self._head_weight(rel[:, 0], rel[:, 1])[:, None] * (rel @ m.T + t)
        disp = (src - pts).reshape(gh, gw, 2).astype(np.float32)
        disp = cv2.resize(disp, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)[:y1 - y0, :x1 - x0]
        return self._grid + disp

    def _head_samples(self, gh: int, gw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The head map's exact samples (absolute x, y), relative to the head centre, and their head
        weights: fixed per rig, so made once."""
        cached = self.__dict__.get("_head_grid")
        if cached is None:
            y0, _, x0, _ = self.roi
            ys = y0 + (np.arange(gh) + 0.5) * _HEAD_STEP - 0.5
            xs = x0 + (np.arange(gw) + 0.5) * _HEAD_STEP - 0.5
            pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
            rel = pts - self.head_center
            cached = self._head_grid = (pts, rel, self._head_weight(rel[:, 0], rel[:, 1])[:, None])
        return cached

    def move_head(self, frame: np.ndarray, head=(0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
        """`frame` (portrait geometry) with the head moved to `head` (in place; returned)."""
        if not any(head):
            return frame
        src = self._head_map(head)
        # fixed-point maps (1/32 px): about half the cost of a float remap, far below visible precision
        map_xy, map_frac = cv2.convertMaps(src, None, cv2.CV_16SC2)  # one 2-channel map: no strided copies
        y0, y1, x0, x1 = self.roi
        frame[y0:y1, x0:x1] = cv2.remap(frame, map_xy, map_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return frame

    def deform(self, coeffs: dict[str, float], head=(0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
        """The warped portrait (a new array): the face's own deformation, then the head motion."""
        return self.move_head(self.deform_local(coeffs), head)
