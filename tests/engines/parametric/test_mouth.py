"""The painted mouth belongs to the portrait: rest is the portrait, its own teeth stay with the skull
when the jaw drops, and a portrait without visible teeth gets drawn ones."""

from __future__ import annotations

import numpy as np

from avatar_engine.engines.parametric.engine import render_frame
from avatar_engine.engines.parametric.paint import mouth_model
from avatar_engine.engines.parametric.rig import FaceRig
from avatar_engine.face import regions as R
from avatar_engine.face.locate import locate_face


def _upper_teeth_box(points: np.ndarray) -> tuple[slice, slice]:
    up, lo = points[R.LIPS_INNER_UPPER[5], :2], points[R.LIPS_INNER_LOWER[5], :2]
    y0, y1 = int(up[1] + 0.25 * (lo[1] - up[1])), int(up[1] + 0.6 * (lo[1] - up[1]))
    x = int(up[0])
    return slice(y0, max(y1, y0 + 1)), slice(x - 6, x + 6)


def test_rest_coefficients_give_the_portrait_exactly(rigged):
    image, _, rig, model = rigged
    assert np.array_equal(render_frame(rig, model, {"close": 0.0, "open": 0.0, "width": 0.0, "round": 0.0}), image)


def test_own_teeth_stay_with_the_skull_when_the_jaw_drops(rigged):
    image, points, rig, model = rigged
    assert model.own_teeth
    rows, cols = _upper_teeth_box(points)
    opened = render_frame(rig, model, {"open": 0.9})
    teeth = image[rows, cols].astype(np.float32).mean()
    assert teeth > 150 and abs(opened[rows, cols].astype(np.float32).mean() - teeth) < 0.2 * teeth
    below = rig.landmarks_at({"open": 0.9})[R.LIPS_INNER_LOWER[5], :2]
    cavity = opened[int(below[1]) - 4, int(below[0]) - 2:int(below[0]) + 3].astype(np.float32).mean()
    assert cavity < 0.6 * teeth  # the uncovered space is dark


def test_closed_mouth_gets_drawn_teeth_when_it_opens(rigged):
    image, points, rig, model = rigged
    closed = render_frame(rig, model, {"close": 1.0})
    closed_points, _ = locate_face(closed)
    closed_rig = FaceRig(closed, closed_points)
    closed_model = mouth_model(closed, closed_points, closed_rig.face_h)
    assert not closed_model.own_teeth
    opened = render_frame(closed_rig, closed_model, {"open": 0.9})
    up = closed_rig.landmarks_at({"open": 0.9})[R.LIPS_INNER_UPPER[5], :2]
    tooth = opened[int(up[1]) + 2, int(up[0]) - 2:int(up[0]) + 3].astype(np.float32)
    assert tooth.mean() > 140 and np.ptp(tooth.mean(axis=0)) < 60  # light and greyish: a tooth
