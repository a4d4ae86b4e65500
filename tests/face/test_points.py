"""The one five-point definition (face.points), in the order both upstream alignments expect."""

import numpy as np
import pytest

from avatar_engine.engines.sadtalker import preprocess as sp
from avatar_engine.face.points import five_points
from avatar_engine.face.points import five_points as five_points_from_mesh


def test_five_points_from_mesh():
    mesh = np.zeros((478, 3), np.float32)  # refined mesh with z; only x, y of the first 468 matter
    image_left_eye = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
    image_right_eye = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
    mesh[image_left_eye, :2] = [100, 50]
    mesh[[33, 133], 0] = [90, 110]  # eye corners: mean stays at the centre
    mesh[image_right_eye, :2] = [160, 52]
    mesh[1, :2] = [130, 80]
    mesh[61, :2] = [105, 110]
    mesh[291, :2] = [155, 111]
    points = five_points_from_mesh(mesh)
    assert points.dtype == np.float32
    np.testing.assert_allclose(points, [[100, 50], [160, 52], [130, 80], [105, 110], [155, 111]], atol=1e-5)
    with pytest.raises(ValueError):
        five_points_from_mesh(np.zeros((68, 2)))


def test_five_points_from_mesh_order():
    mesh = np.zeros((478, 3))
    mesh[33, :2], mesh[133, :2] = (100, 200), (140, 204)  # subject's right eye = image left
    mesh[362, :2], mesh[263, :2] = (180, 204), (220, 200)
    mesh[1, :2] = (160, 260)  # nose tip
    mesh[61, :2], mesh[291, :2] = (125, 300), (195, 300)
    pts = five_points(mesh)
    expected = [[120, 202], [200, 202], [160, 260], [125, 300], [195, 300]]
    assert pts.dtype == np.float32 and np.array_equal(pts, np.array(expected, np.float32))
    # In the y-up frame align_img uses, the order is the one of LM3D_STD: x increases eye->eye, mouth->mouth,
    # eyes above nose above mouth.
    up = pts.copy()
    up[:, 1] = 511 - up[:, 1]
    std = sp.LM3D_STD
    assert np.sign(up[1, 0] - up[0, 0]) == np.sign(std[1, 0] - std[0, 0])
    assert np.sign(up[4, 0] - up[3, 0]) == np.sign(std[4, 0] - std[3, 0])
    assert up[0, 1] > up[2, 1] > up[3, 1] and std[0, 1] > std[2, 1] > std[3, 1]
    with pytest.raises(ValueError):
        five_points(np.zeros((68, 2)))
