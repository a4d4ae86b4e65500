"""Head-pose keypoint tracks and their composition with upstream's normalize_kp (no network weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar_engine.engines.fomm.motion import (
    hull_area,
    movement_scale,
    normalize_kp,
    pose_keypoints,
    pose_matrix,
    rigid_head_depth,
)
from avatar_engine.engines.fomm.nets import DenseMotionNetwork, FommConfig

RELATIVE = dict(adapt_movement_scale=True, use_relative_movement=True, use_relative_jacobian=True)


def _kp(batch=1, k=10, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    value = torch.rand(batch, k, 2, generator=g, dtype=dtype) * 1.2 - 0.6
    jac = torch.eye(2, dtype=dtype) + 0.2 * torch.randn(batch, k, 2, 2, generator=g, dtype=dtype)
    return {"value": value, "jacobian": jac}


def _rot(deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_pose_returns_source_exactly(dtype):
    kp = _kp(dtype=dtype)
    for out in (
        pose_keypoints(kp),
        pose_keypoints(kp, rotation_deg=np.zeros((4, 3)), translation=np.zeros((4, 2)), scale=np.ones(4)),
        pose_keypoints(kp, linear=torch.eye(2), depth=torch.ones(10)),
        pose_keypoints(kp, rotation_deg=[0.0, 0.0, 0.0], depth=rigid_head_depth(kp)),
    ):
        n = out["value"].shape[0]
        assert torch.equal(out["value"], kp["value"].expand(n, -1, -1))
        assert torch.equal(out["jacobian"], kp["jacobian"].expand(n, -1, -1, -1))


def test_roll_rotates_values_about_the_centroid_and_left_multiplies_jacobians():
    kp = _kp()
    out = pose_keypoints(kp, rotation_deg=[[0.0, 0.0, 15.0]])
    c = kp["value"].mean(dim=1, keepdim=True)
    r = _rot(15.0)
    assert torch.allclose(out["value"], c + (kp["value"] - c) @ r.T, atol=1e-12)
    assert torch.allclose(out["jacobian"], r @ kp["jacobian"], atol=1e-12)
    # positive roll on screen (x right, y down): a point right of the centre moves down
    pt = pose_keypoints({"value": torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5]]], dtype=torch.float64),
                         "jacobian": torch.eye(2, dtype=torch.float64).expand(1, 3, 2, 2)},
                        rotation_deg=[0.0, 0.0, 90.0], center=[0.0, 0.0])
    assert torch.allclose(pt["value"][0, 0], torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-12)


def test_translation_scale_and_explicit_linear_track():
    kp = _kp()
    lin = torch.stack([_rot(a) for a in (0.0, 5.0, -5.0)])
    t = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, -0.2]], dtype=torch.float64)
    s = torch.tensor([1.0, 1.1, 0.9], dtype=torch.float64)
    out = pose_keypoints(kp, linear=lin, translation=t, scale=s, center=[0.0, 0.0])
    assert out["value"].shape == (3, 10, 2) and out["jacobian"].shape == (3, 10, 2, 2)
    for i in range(3):
        a = s[i] * lin[i]
        assert torch.allclose(out["value"][i], kp["value"][0] @ a.T + t[i], atol=1e-12)
        assert torch.allclose(out["jacobian"][i], a @ kp["jacobian"][0], atol=1e-12)


def test_yaw_and_pitch_foreshorten_and_depth_gives_the_turn_a_direction():
    kp = _kp()
    rows = pose_matrix([[30.0, 0.0, 0.0], [0.0, 20.0, 0.0]], kp["value"])
    assert torch.allclose(rows[0, :, :2], torch.diag(torch.tensor([math.cos(math.radians(30)), 1.0],
                                                                  dtype=torch.float64)), atol=1e-12)
    assert torch.allclose(rows[1, :, :2], torch.diag(torch.tensor([1.0, math.cos(math.radians(20))],
                                                                  dtype=torch.float64)), atol=1e-12)
    depth = rigid_head_depth(kp)
    right = pose_keypoints(kp, rotation_deg=[20.0, 0.0, 0.0], depth=depth)
    left = pose_keypoints(kp, rotation_deg=[-20.0, 0.0, 0.0], depth=depth)
    flat = pose_keypoints(kp, rotation_deg=[20.0, 0.0, 0.0])
    nearest = int(depth[0].argmax())  # the "nose": nearest to the viewer moves with the turn
    assert right["value"][0, nearest, 0] > flat["value"][0, nearest, 0] > left["value"][0, nearest, 0]
    assert torch.equal(right["jacobian"], flat["jacobian"])  # Jacobians use the 2x2 block only
    chin_up = pose_keypoints(kp, rotation_deg=[0.0, 15.0, 0.0], depth=depth)
    assert chin_up["value"][0, nearest, 1] < pose_keypoints(kp, rotation_deg=[0.0, 15.0, 0.0])["value"][0, nearest, 1]
    with pytest.raises(ValueError):
        pose_keypoints(kp, rotation_deg=[90.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        pose_keypoints(kp, linear=torch.eye(2), rotation_deg=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        pose_keypoints(kp, scale=[0.0])
    with pytest.raises(ValueError):
        pose_keypoints(_kp(batch=2), scale=[1.0, 1.0, 1.0])


def test_posed_head_moves_as_one_rigid_body_in_the_generators_sparse_motion():
    """Every keypoint's first-order motion J_s J_d^-1 (z - v_d) + v_s is the same inverse affine map."""
    kp_s = _kp()
    lin, t = 1.1 * _rot(10.0), torch.tensor([0.05, -0.03], dtype=torch.float64)
    kp_d = pose_keypoints(kp_s, linear=lin[None], translation=t[None], center=[0.0, 0.0])
    net = DenseMotionNetwork(FommConfig(dm_block_expansion=4, dm_max_features=8, dm_num_blocks=2))
    motions = net.sparse_motions(16, 16, kp_d, kp_s)  # (1, K+1, 16, 16, 2)
    from avatar_engine.engines.fomm.nets import coordinate_grid

    z = coordinate_grid(16, 16, kp_s["value"])
    expected = (z - t) @ torch.linalg.inv(lin).T
    for k in range(1, 11):
        assert torch.allclose(motions[0, k], expected, atol=1e-10), k


def test_normalize_kp_composes_with_a_pose_track():
    kp_s = _kp(seed=1)
    track = dict(rotation_deg=[[0, 0, 0], [5.0, -3.0, 8.0], [-10.0, 4.0, -6.0]],
                 translation=[[0, 0], [0.05, 0.02], [-0.04, 0.0]], scale=[1.0, 1.05, 0.97])
    posed = pose_keypoints(kp_s, **track)
    # driving == posed source with the source as the initial frame: relative transfer is the pose itself
    same = normalize_kp(kp_s, posed, kp_s, **RELATIVE)
    assert torch.allclose(same["value"], posed["value"], atol=1e-12)
    assert torch.allclose(same["jacobian"], posed["jacobian"], atol=1e-12)
    # another driving face: the Jacobian part always transfers exactly the pose's linear map
    kp_other = _kp(seed=2)
    moved = normalize_kp(kp_s, pose_keypoints(kp_other, **track), kp_other, **RELATIVE)
    assert torch.allclose(moved["jacobian"], posed["jacobian"], atol=1e-10)
    # pure translation transfers exactly (scaled by the hull ratio)
    shift = pose_keypoints(kp_other, translation=[[0.1, -0.05]])
    moved = normalize_kp(kp_s, shift, kp_other, **RELATIVE)
    scale = movement_scale(kp_s, kp_other)
    assert torch.allclose(moved["value"] - kp_s["value"], scale * torch.tensor([0.1, -0.05], dtype=torch.float64),
                          atol=1e-12)


def test_normalize_kp_flags_and_degenerate_hull():
    kp_s, kp_d, kp_i = _kp(seed=3), _kp(seed=4), _kp(seed=5)
    absolute = normalize_kp(kp_s, kp_d, kp_i)
    assert absolute["value"] is kp_d["value"] and absolute["jacobian"] is kp_d["jacobian"]
    no_jac = normalize_kp(kp_s, kp_d, kp_i, use_relative_movement=True)
    assert no_jac["jacobian"] is kp_d["jacobian"]
    assert torch.allclose(no_jac["value"], kp_d["value"] - kp_i["value"] + kp_s["value"])
    line = {"value": torch.stack([torch.linspace(-1, 1, 10), torch.zeros(10)], -1)[None].double(),
            "jacobian": kp_s["jacobian"]}
    assert hull_area(line["value"][0].numpy()) == 0.0
    assert movement_scale(kp_s, line) == 1.0  # upstream would raise; unscaled motion instead
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]])
    assert hull_area(square) == pytest.approx(1.0)
