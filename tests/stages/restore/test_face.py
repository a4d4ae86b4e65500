"""Face restoration glue: alignment points, paste-back locality, weight blending, temporal stability, batching.

Runs the real 512 network with det-filled weights (it paints garbage colours; only geometry and
determinism are checked here, the network itself is verified in test_gfpgan_net.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avatar_engine.errors import AvatarError
from avatar_engine.runtime.detweights import fill_module
from avatar_engine.stages.restore.face import FFHQ_512_TEMPLATE, FaceRestorer
from avatar_engine.stages.restore.nets import gfpgan_v14
from tests.support.media import ASSETS
from tests.support.media import FIXTURES as FIXTURE_ROOT

FIXTURES = FIXTURE_ROOT / "gfpgan"
# Picked by hand on astronaut_512.png: eye centres, nose tip, mouth corners (image left first).
ASTRONAUT_POINTS = np.array([[202, 101], [245, 104], [225, 126], [203, 141], [241, 142]], np.float32)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.asarray(Image.open(ASSETS / "astronaut_512.png").convert("RGB")).copy()


@pytest.fixture(scope="module")
def model():
    return fill_module(gfpgan_v14())


@pytest.fixture(scope="module")
def restorer(model):
    return FaceRestorer(model, device="cpu", weight=1.0, batch_size=2)


@pytest.fixture(scope="module")
def restored(restorer, frame):
    return restorer.restore(frame, ASTRONAUT_POINTS)


def test_template_is_in_image_left_right_order():
    assert FFHQ_512_TEMPLATE.shape == (5, 2)
    assert FFHQ_512_TEMPLATE[0, 0] < FFHQ_512_TEMPLATE[1, 0]
    assert FFHQ_512_TEMPLATE[3, 0] < FFHQ_512_TEMPLATE[4, 0]
    assert FFHQ_512_TEMPLATE[0, 1] < FFHQ_512_TEMPLATE[2, 1] < FFHQ_512_TEMPLATE[3, 1]


def test_restore_changes_only_the_face(frame, restored):
    assert restored.shape == frame.shape and restored.dtype == np.uint8
    face = np.s_[90:135, 205:245]
    assert np.abs(restored[face].astype(int) - frame[face]).mean() > 5
    # Far from the face (hand-picked face spans about x 165..285, y 45..190): untouched, bit for bit.
    assert np.array_equal(restored[250:], frame[250:])
    assert np.array_equal(restored[:, :140], frame[:, :140])
    assert np.array_equal(restored[:, 310:], frame[:, 310:])


def test_weight_zero_returns_input(model, frame):
    out = FaceRestorer(model, weight=0.0).restore(frame, ASTRONAUT_POINTS)
    assert out is not frame
    assert np.array_equal(out, frame)


def test_weight_half_is_halfway(model, frame, restored):
    half = FaceRestorer(model, weight=0.5).restore(frame, ASTRONAUT_POINTS)
    midway = frame.astype(np.float64) + 0.5 * (restored.astype(np.float64) - frame)
    assert np.abs(half - midway).max() <= 1.0


def test_still_sequence_has_no_flicker_and_batch_equals_single(restorer, frame, restored):
    sequence = restorer.restore_batch([frame] * 5, ASTRONAUT_POINTS)  # batches of 2 + 2 + 1
    flicker = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(sequence, sequence[1:])])
    assert flicker == 0.0
    for out in sequence:
        assert np.array_equal(out, restored)


def test_batch_with_per_frame_points_equals_single(restorer, frame, restored):
    shift = 9
    moved = np.roll(frame, shift, axis=1)
    moved_points = ASTRONAUT_POINTS + [shift, 0]
    batch = restorer.restore_batch([moved, frame], [moved_points, ASTRONAUT_POINTS])
    assert np.array_equal(batch[1], restored)
    assert np.array_equal(batch[0], restorer.restore(moved, moved_points))


def test_degenerate_points_raise_no_face(restorer, frame):
    with pytest.raises(AvatarError) as err:
        restorer.restore(frame, np.full((5, 2), 100.0, np.float32))
    assert err.value.code == "no_face"


def test_rejects_wrong_frame_or_points(restorer, frame):
    with pytest.raises(ValueError):
        restorer.restore(frame.astype(np.float32), ASTRONAUT_POINTS)
    with pytest.raises(ValueError):
        restorer.restore_batch([frame, frame], np.zeros((3, 5, 2), np.float32))
