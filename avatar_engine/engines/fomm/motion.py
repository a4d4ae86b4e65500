"""Keypoint motion for FOMM: upstream's relative-motion transfer, and a head-pose track on keypoints.

Keypoint dicts are `{"value": (B, K, 2), "jacobian": (B, K, 2, 2)}` with (x, y) in [-1, 1], x to the
right, y down (image convention; 1.0 is half the image width).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .nets import Keypoints

ArrayLike = torch.Tensor | np.ndarray | Sequence


def hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of (K, 2) points; 0.0 when they are collinear (no hull)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(np.asarray(points, dtype=np.float64)).volume)  # 2-D "volume" = area
    except QhullError:
        return 0.0


def movement_scale(kp_source: Keypoints, kp_driving_initial: Keypoints) -> float:
    """sqrt(hull area of the source keypoints / hull area of the first driving frame's), batch element
    0 only, as upstream's `adapt_movement_scale`. 1.0 when either hull is degenerate (upstream would
    raise): unscaled motion is the safe choice for a face the detector collapsed to a line."""
    area_source = hull_area(kp_source["value"][0].detach().cpu().numpy())
    area_initial = hull_area(kp_driving_initial["value"][0].detach().cpu().numpy())
    if area_source <= 0.0 or area_initial <= 0.0:
        return 1.0
    return float(np.sqrt(area_source) / np.sqrt(area_initial))


def normalize_kp(
    kp_source: Keypoints,
    kp_driving: Keypoints,
    kp_driving_initial: Keypoints,
    *,
    adapt_movement_scale: bool = False,
    use_relative_movement: bool = False,
    use_relative_jacobian: bool = False,
) -> Keypoints:
    """Transfer the driving video's motion onto the source's keypoints (upstream `animate.normalize_kp`;
    demo.py's `--relative --adapt_scale` sets all three flags).

    value    = (v_driving - v_driving_initial) * scale + v_source
    jacobian = (J_driving @ inv(J_driving_initial)) @ J_source
    where scale = `movement_scale(...)` or 1. Without relative movement the driving keypoints are used
    as they are (absolute). `kp_driving` may hold N frames; the source and initial frame broadcast.
    """
    scale = movement_scale(kp_source, kp_driving_initial) if adapt_movement_scale else 1.0
    out = dict(kp_driving)
    if use_relative_movement:
        out["value"] = (kp_driving["value"] - kp_driving_initial["value"]) * scale + kp_source["value"]
        if use_relative_jacobian:
            change = torch.matmul(kp_driving["jacobian"], torch.inverse(kp_driving_initial["jacobian"]))
            out["jacobian"] = torch.matmul(change, kp_source["jacobian"])
    return out


def _as_tensor(x: ArrayLike, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(like.dtype).to(like.device)


def pose_matrix(rotation_deg: ArrayLike, like: torch.Tensor) -> torch.Tensor:
    """(N, 3) yaw, pitch, roll in degrees -> (N, 2, 3): the first two rows of R = Rz(roll) Ry(yaw) Rx(pitch)."""
    ang = _as_tensor(rotation_deg, like).reshape(-1, 3)
    if bool((ang[:, :2].abs() >= 90).any()):
        raise ValueError("yaw and pitch must lie strictly between -90 and 90 degrees")
    yaw, pitch, roll = (torch.deg2rad(ang[:, i]) for i in range(3))
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)

    def mat(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rz = mat([[cr, -sr, zero], [sr, cr, zero], [zero, zero, one]])
    ry = mat([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rx = mat([[one, zero, zero], [zero, cp, -sp], [zero, sp, cp]])
    return (rz @ ry @ rx)[:, :2, :]


def pose_keypoints(
    kp_source: Keypoints,
    *,
    rotation_deg: ArrayLike | None = None,
    linear: ArrayLike | None = None,
    translation: ArrayLike | None = None,
    scale: ArrayLike | None = None,
    center: ArrayLike | None = None,
    depth: ArrayLike | None = None,
) -> Keypoints:
    """Driving keypoints that move the source head along a pose track of N frames.

    For keypoint k with value v_k, offset d_k = v_k - c from the centre c (default: the centroid of
    that batch element's keypoints) and depth z_k (default 0):

        v'_k = v_k + (s A - I) d_k + s b z_k + t
        J'_k = s A J_k

    where A (2x2) and b (2,) are the first two rows of the pose rotation, s the scale and t the
    translation. `linear` gives A directly (any invertible 2-D map, b = 0). `rotation_deg` (yaw, pitch,
    roll per frame) builds R = Rz(roll) Ry(yaw) Rx(pitch) in image axes (x right, y down, z toward the
    viewer): positive roll turns the head clockwise on screen, positive yaw turns the face toward the
    viewer's right, positive pitch lifts the chin. Yaw and pitch are a weak-perspective approximation:
    the face is a plane through c (A = R[:2, :2] foreshortens it by cos(yaw) across, cos(pitch) down), so
    without `depth` the sign of a turn does not show; per-keypoint `depth` (K,) or (N, K), in the same
    units as the values, adds the parallax b z_k. Keep |yaw|, |pitch| under ~25 degrees: FOMM has no
    model of the hidden side of the head.

    Left-multiplying every Jacobian by s A makes the generator's local map around every keypoint,
    J_s J'^-1 = (s A)^-1, the same for all keypoints: without depth the whole head moves as one rigid
    (affine) body instead of each part on its own. The identity pose returns `kp_source` bit-exactly.

    Shapes: per-frame arguments are (N, 3) / (N, 2, 2) / (N, 2) / (N,); a single frame may drop N.
    `kp_source` is batch 1 (broadcast to N) or batch N.
    """
    value, jac = kp_source["value"], kp_source["jacobian"]
    if rotation_deg is not None and linear is not None:
        raise ValueError("give rotation_deg or linear, not both")
    if rotation_deg is not None:
        rows = pose_matrix(rotation_deg, value)
        a, b = rows[:, :, :2], rows[:, :, 2]
    elif linear is not None:
        a = _as_tensor(linear, value).reshape(-1, 2, 2)
        b = None
    else:
        a = b = None
    s = None if scale is None else _as_tensor(scale, value).reshape(-1)
    if s is not None and bool((s <= 0).any()):
        raise ValueError("scale must be positive")
    t = None if translation is None else _as_tensor(translation, value).reshape(-1, 2)
    per_frame = [x.shape[0] for x in (a, s, t) if x is not None]
    n = max(per_frame + [value.shape[0]])
    if any(m not in (1, n) for m in per_frame + [value.shape[0]]):
        raise ValueError("pose arguments and keypoints disagree on the number of frames: "
                         f"{per_frame}, {value.shape[0]}")
    if not per_frame:
        return {k: v.clone() for k, v in kp_source.items()}

    value = value.expand(n, *value.shape[1:])
    jac = jac.expand(n, *jac.shape[1:])
    eye = torch.eye(2, dtype=value.dtype, device=value.device)
    lin = eye.expand(n, 2, 2) if a is None else a.expand(n, 2, 2)
    if s is not None:
        lin = lin * s.expand(n).view(n, 1, 1)
    c = value.mean(dim=1, keepdim=True) if center is None else _as_tensor(center, value).reshape(-1, 1, 2)
    d = value - c  # (N, K, 2)
    new_value = value + torch.einsum("nij,nkj->nki", lin - eye, d)
    if depth is not None and b is not None:
        z = _as_tensor(depth, value).reshape(-1, value.shape[1])
        sb = b.expand(n, 2) * (1.0 if s is None else s.expand(n).view(n, 1))
        new_value = new_value + z.unsqueeze(-1) * sb.unsqueeze(1)
    if t is not None:
        new_value = new_value + t.expand(n, 2).unsqueeze(1)
    new_jac = torch.matmul(lin.unsqueeze(1), jac)
    return {"value": new_value, "jacobian": new_jac}


def rigid_head_depth(kp: Keypoints, bulge: float = 0.5) -> torch.Tensor:
    """A dome depth per keypoint for `pose_keypoints(depth=...)`: keypoints near the centroid (nose,
    mouth) are `bulge` x the keypoint spread closer to the viewer than the outermost ones."""
    v = kp["value"]
    r2 = ((v - v.mean(dim=1, keepdim=True)) ** 2).sum(-1)
    r2max = r2.amax(dim=1, keepdim=True).clamp_min(1e-12)
    spread = r2max.sqrt()
    return bulge * spread * (1 - r2 / r2max)


__all__ = ["hull_area", "movement_scale", "normalize_kp", "pose_keypoints", "pose_matrix", "rigid_head_depth"]
