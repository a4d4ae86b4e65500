"""SadTalker's 3DMM input preparation: 5-point alignment to a 224x224 crop and coefficient extraction.

Follows upstream `CropAndExtract.generate` (SadTalker cd4c0465): the (already cropped) portrait is resized to
256x256 with `cv2.resize` (bilinear), five landmarks are y-flipped (`y' = H - 1 - y`), `align_img` fits scale
and translation against the standard 3D landmarks (least squares, "POS"), resizes with PIL BICUBIC and crops
224x224; ReconNet turns the crop (RGB / 255, no normalisation) into 257 coefficients, of which SadTalker keeps
73: exp (64), angle (3), trans (3), crop params (s, tx, ty).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...errors import AvatarError

RECON_SIZE = 224
PIC_SIZE = 256
RESCALE_FACTOR = 102.0
MAX_RESIZED = 16384  # longest side of the rescaled frame; beyond it the landmarks cannot be a real face

# Standard 3D positions of the five points (x right, y up), float32. Derived upstream from the 68-point mean
# shape `similarity_Lm3D_all.mat`: 68-pt indices (1-based) mean(37,40), mean(43,46), 31, 49, 55, i.e. the eye
# on the image's left, the eye on the image's right, the nose tip, the left and the right mouth corner.
LM3D_STD = np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],
        [0.30979887, 0.28972036, 0.13179526],
        [0.0032534988, -0.046179324, 0.55244243],
        [-0.25216928, -0.38133916, 0.22405732],
        [0.2484662, -0.38128236, 0.22235769],
    ],
    dtype=np.float32,
)



def default_lm5(width: int, height: int, lm3d_std: np.ndarray = LM3D_STD) -> np.ndarray:
    """Upstream's fallback when no landmarks were found: the standard points mapped onto the frame (y up)."""
    lm = (lm3d_std[:, :2] + 1) / 2.0
    return np.concatenate([lm[:, :1] * width, lm[:, 1:2] * height], 1)


def _pos(xp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares scaled-orthographic fit of 3D points x (3,n) to 2D points xp (2,n): (t (2,), s)."""
    n = xp.shape[1]
    a = np.zeros([2 * n, 8])
    a[0::2, 0:3] = x.T
    a[0::2, 3] = 1
    a[1::2, 4:7] = x.T
    a[1::2, 7] = 1
    b = np.reshape(xp.T, [2 * n, 1])
    k = np.linalg.lstsq(a, b)[0][:, 0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), s


def align_img(
    img_rgb_u8: np.ndarray, lm5: np.ndarray, lm3d_std: np.ndarray = LM3D_STD
) -> tuple[np.ndarray, np.ndarray]:
    """Upstream `align_img`: (H,W,3) uint8 + five points (pixels, **y up**) -> (224,224,3) uint8, trans_params.

    `trans_params` = float32 [w0, h0, s, tx, ty]. Sizes and crop offsets are truncated toward zero like
    upstream's `astype(int32)`; parts of the crop outside the resized image are black (PIL crop). Raises
    `AvatarError('no_face')` for degenerate landmarks (zero, non-finite or absurdly small face scale).
    """
    img = Image.fromarray(np.asarray(img_rgb_u8, dtype=np.uint8))
    w0, h0 = img.size
    t, s = _pos(np.asarray(lm5).T, np.asarray(lm3d_std).T)
    if not (np.isfinite(s) and np.all(np.isfinite(t)) and s > 0 and max(w0, h0) * RESCALE_FACTOR / s <= MAX_RESIZED):
        raise AvatarError("no_face", f"facial landmarks are degenerate (fitted face scale {s:.3g})")
    s = RESCALE_FACTOR / s
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - RECON_SIZE / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - RECON_SIZE / 2 + (h0 / 2 - t[1]) * s)
    img = img.resize((w, h), resample=Image.BICUBIC).crop((left, up, left + RECON_SIZE, up + RECON_SIZE))
    trans_params = np.array([w0, h0, s, t[0], t[1]], dtype=np.float64).astype(np.float32)
    return np.asarray(img), trans_params


def recon_input(img224_u8: np.ndarray):
    """(224,224,3) uint8 RGB -> (1,3,224,224) float32 tensor in [0,1]."""
    import torch

    return torch.tensor(img224_u8 / 255.0, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)


def coeffs_from_image(reconnet, img_rgb_u8: np.ndarray, lm5: np.ndarray | None) -> np.ndarray:
    """Portrait (H,W,3) uint8 RGB + five points in its pixels (y down, `LM3D_STD` order, or None for upstream's
    no-landmark fallback) -> (1,73) float32 `coeff_3dmm` row: exp 64, angle 3, trans 3, (s, tx, ty)."""
    import cv2
    import torch

    from .nets.reconnet import COEFF_SLICES

    img = np.asarray(img_rgb_u8, dtype=np.uint8)
    h, w = img.shape[:2]
    frame = cv2.resize(img, (PIC_SIZE, PIC_SIZE))
    if lm5 is None:
        lm = default_lm5(PIC_SIZE, PIC_SIZE)
    else:
        lm = np.asarray(lm5, dtype=np.float32).reshape(5, 2).copy()
        lm[:, 0] = (lm[:, 0] + 0.5) * (PIC_SIZE / w) - 0.5
        lm[:, 1] = PIC_SIZE - 1 - ((lm[:, 1] + 0.5) * (PIC_SIZE / h) - 0.5)
    img224, trans_params = align_img(frame, lm)
    with torch.no_grad():
        device = next(reconnet.parameters()).device
        coeffs = reconnet(recon_input(img224).to(device)).cpu().numpy()
    return np.concatenate(
        [coeffs[:, COEFF_SLICES["exp"]], coeffs[:, COEFF_SLICES["angle"]], coeffs[:, COEFF_SLICES["trans"]],
         trans_params[None, 2:]],
        axis=1,
    ).astype(np.float32)
