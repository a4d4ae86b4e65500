"""The face kit's masks, square crops, paste-back and landmark face boxes (used by every engine)."""

import numpy as np
import pytest

from avatar_engine.face.blend import Box, ellipse_mask, face_box_from_landmarks, lower_face_mask
from avatar_engine.face.blend import SquarePaster as FacePaster
from avatar_engine.face.blend import extract_square as extract_crop
from avatar_engine.face.blend import square_box as crop_box

# five points of the bundled portrait's face at 512 px (image-left eye, image-right eye, nose, mouth corners)
LM5 = np.array([[203.5, 101.5], [246.1, 103.8], [223.7, 124.7], [199.6, 139.2], [247.0, 141.6]], np.float32)


def ibug68_like(cx: float, cy: float, size: float) -> np.ndarray:
    """A crude 68-point layout: jaw U (0-16) from ear to ear, brows, nose, eyes, mouth."""
    jaw_angle = np.linspace(np.pi, 0, 17)
    jaw = np.stack([cx + 0.5 * size * np.cos(jaw_angle), cy + 0.55 * size * np.sin(jaw_angle)], 1)
    brows = np.stack([np.linspace(cx - 0.4 * size, cx + 0.4 * size, 10), np.full(10, cy - 0.3 * size)], 1)
    ring = np.linspace(0, 2 * np.pi, 41)
    inner = np.stack([cx + 0.25 * size * np.cos(ring), cy + 0.2 * size * np.sin(ring)], 1)
    return np.concatenate([jaw, brows, inner])


def test_crop_box_is_an_upstream_sized_square_inside_the_image():
    box = crop_box(LM5, (512, 512))
    eye_dist = float(np.hypot(*(LM5[1] - LM5[0])))
    assert box.side == round(4 * eye_dist)  # 2 * max(2 |eye-eye|, 1.8 |eye-mouth|), eyes dominate here
    centre = (LM5[0] + LM5[1]) / 2 + 0.1 * ((LM5[3] + LM5[4]) / 2 - (LM5[0] + LM5[1]) / 2)
    assert abs(box.x0 + box.side / 2 - centre[0]) <= 1 and abs(box.y0 + box.side / 2 - centre[1]) <= 1
    assert 0 <= box.x0 and box.x1 <= 512 and 0 <= box.y0 and box.y1 <= 512
    # A face at the top-left corner: the square is shifted in, not clipped (no stretched face).
    corner = crop_box(LM5 - [190, 90], (512, 512))
    assert (corner.x0, corner.y0, corner.side) == (0, 0, box.side)
    # A face filling a small image: the square is the longer side, centred; only then does it stick out.
    big = crop_box(LM5 * 4 - [600, 300], (256, 200))
    assert big.side == 256 and big.y0 == 0 and big.x0 == -28 and big.x1 == 228
    with pytest.raises(ValueError):
        crop_box(np.full((5, 2), np.nan), (512, 512))


def test_extract_crop_resizes_and_replicates_edges():
    img = np.zeros((100, 80, 3), np.uint8)
    img[:, :, 0] = np.arange(80, dtype=np.uint8)[None, :]
    img[:, :, 1] = 200
    crop = extract_crop(img, Box.square(10, 20, 40), 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert np.all(crop[:, :, 1] == 200)
    assert abs(int(crop[:, 0, 0].mean()) - 10) <= 1 and abs(int(crop[:, -1, 0].mean()) - 49) <= 1
    out = extract_crop(img, Box.square(-10, 0, 100), 100)  # 10 px beyond each side: edge columns repeat
    assert np.all(out[:, :10, 0] == 0) and np.all(out[:, 90:, 0] == 79) and np.array_equal(out[:, 10:90], img)


def test_ellipse_mask_feathers_to_zero_at_the_box_edges():
    m = ellipse_mask(64, 48)
    assert m.shape == (64, 48) and m.dtype == np.float32
    assert m[32, 24] == 1.0 and m[0, 0] == 0.0 and m[0, 24] == 0.0 and m[32, 0] == 0.0
    assert np.allclose(m, m[::-1]) and np.allclose(m, m[:, ::-1])
    row = m[32, 24:]
    assert np.all(np.diff(row) <= 1e-7) and 0 < row[20] < 1  # monotone fall-off through the feather band
    with pytest.raises(ValueError):
        ellipse_mask(8, 8, inner=0.9, outer=0.5)


def test_face_paster_changes_only_the_box_and_keeps_an_unchanged_face_identical():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = Box.square(100, -10, 70)  # sticks out at the top and the right
    paster = FacePaster(img, box)
    same = paster.paste(extract_crop(img, box, 70))  # same resolution: the identity face
    assert np.array_equal(same, img)
    white = paster.paste(np.full((256, 256, 3), 255, np.uint8))
    changed = np.any(white != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 0 and ys.max() < 60 and xs.min() >= 100
    assert np.all(white[25, 135] == 255)  # box centre (y 25, x 135): fully the rendered face
    assert np.array_equal(white[:, :100], img[:, :100]) and np.array_equal(white[60:], img[60:])
    assert paster.paste(np.zeros((256, 256, 3), np.uint8)).shape == img.shape


def test_lower_face_mask_is_soft_and_lower_only():
    mask = lower_face_mask(140, 120)[..., 0]
    assert mask.shape == (140, 120) and mask.min() >= 0 and mask.max() == pytest.approx(1.0, abs=1e-3)
    assert (mask[: int(0.48 * 140)] == 0).all()
    assert mask[-1].max() < 0.05 and mask[:, 0].max() < 0.05 and mask[:, -1].max() < 0.05
    values = np.unique(np.round(mask, 3))
    assert len(values) > 20  # feathered, not a hard rectangle


def test_face_box_from_landmarks_covers_forehead_to_chin():
    points = ibug68_like(cx=256, cy=240, size=160)
    y1, y2, x1, x2 = face_box_from_landmarks(points, (512, 512))
    assert y2 == round(points[:, 1].max())  # chin; the stage's bottom pad adds the margin below
    assert y1 < points[:, 1].min() - 0.15 * 160  # reaches into the forehead above the brows
    assert x1 <= points[:, 0].min() + 1 and x2 >= points[:, 0].max() - 1
    assert 1.0 <= (y2 - y1) / (x2 - x1) <= 1.3  # square-ish like an S3FD box


def test_face_box_from_landmarks_is_clamped_to_the_image():
    y1, y2, x1, x2 = face_box_from_landmarks(ibug68_like(cx=20, cy=40, size=160), (200, 150))
    assert 0 <= y1 < y2 <= 200 and 0 <= x1 < x2 <= 150
    with pytest.raises(ValueError):
        face_box_from_landmarks(np.array([[np.nan, 1.0], [2.0, 3.0], [4.0, 5.0]]), (10, 10))
