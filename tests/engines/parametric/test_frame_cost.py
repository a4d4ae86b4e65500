"""What the per-frame savings keep: a frame depends on its own coefficients only (the rig's reused
buffers carry nothing over), and a repeated state gives an equal frame, never the same array."""

from __future__ import annotations

import numpy as np

from avatar_engine.engines.parametric.animation import HeadTrack
from avatar_engine.engines.parametric.engine import Motion, render_frame
from avatar_engine.engines.parametric.paint import mouth_model
from avatar_engine.engines.parametric.rig import FaceRig


def test_a_frame_depends_on_its_own_coefficients_only(rigged):
    image, points, rig, model = rigged
    first = render_frame(rig, model, {"open": 0.6, "close": 0.3}, (1.0, 0.01, 0.0, 0.0))
    render_frame(rig, model, {"open": 0.1, "close": 0.9, "width": 0.4}, (-2.0, 0.0, 0.01, 0.003))
    again = render_frame(rig, model, {"open": 0.6, "close": 0.3}, (1.0, 0.01, 0.0, 0.0))
    fresh_rig = FaceRig(image, points)
    fresh = render_frame(fresh_rig, mouth_model(image, points, fresh_rig.face_h), {"open": 0.6, "close": 0.3},
                         (1.0, 0.01, 0.0, 0.0))
    assert np.array_equal(first, again) and np.array_equal(first, fresh)


def test_a_repeated_state_is_an_equal_copy(rigged):
    _, _, rig, model = rigged
    zero = np.zeros(3)
    head = HeadTrack(zero, zero, zero, zero)
    frames = list(Motion(rig, model, None, np.array([0.0, 0.0, 0.8]), head, 3, {}).images())
    assert np.array_equal(frames[0], frames[1]) and frames[0] is not frames[1]
    assert not np.array_equal(frames[1], frames[2])  # a blink: rendered anew
    frames[1][:] = 0  # a consumer writing into one frame leaves the others alone
    assert frames[0].any()
