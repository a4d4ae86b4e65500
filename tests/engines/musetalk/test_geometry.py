"""Crop boxes and paste-back equal to upstream's (golden_geometry, golden_frame), exactly."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_engine.engines.musetalk import geometry as geo


def _cases(geometry):
    arrays, meta = geometry
    return [(f"c{i}", case) for i, case in enumerate(meta["cases"])]


def test_landmarks_are_truncated_dwpose_points(geometry):
    arrays, _ = geometry
    for i in range(4):
        np.testing.assert_array_equal(arrays[f"c{i}_keypoints133"][23:91].astype(np.int32),
                                      arrays[f"c{i}_landmarks68_int32"])


def test_crop_boxes_match_upstream(geometry):
    arrays, meta = geometry
    height = arrays["body_bgr_u8"].shape[0]
    for key, case in _cases(geometry):
        if case.get("placeholder"):
            continue  # no face: upstream skips the frame (our mesh raises no_face before)
        landmarks = arrays[f"{key}_keypoints133"][23:91]
        box = geo.crop_box(landmarks, tuple(case["s3fd_box"]), height)
        assert list(box) == case["box_v15"], key
        assert list(geo.crop_box(landmarks, tuple(case["s3fd_box"]), height, extra_margin=0)) == \
            [*case["bbox_upstream"][:3], min(case["bbox_upstream"][3], height)], key
        crop, s = geo.expanded_box(box)
        assert list(crop) == case["crop_box_expand_1p5"] and s == case["s"], key
        assert geo.blur_kernel(2 * s, 0.05) == case["blur_kernel"]
        assert geo.blur_kernel(2 * s, 0.1) == case["blur_kernel_realtime"]


def test_bbox_shift_moves_the_upper_bound(geometry):
    arrays, meta = geometry
    landmarks = arrays["c0_keypoints133"][23:91]
    x1, y1, x2, y2 = geo.landmark_box(landmarks)
    _, y1_shifted, _, y2_shifted = geo.landmark_box(landmarks, bbox_shift=5)
    assert y2_shifted == y2 and y1_shifted == y1 + 10  # the nose moves 5 down, the half-face 5 shorter


def _paste_case(arrays, case, key, blur_ratio, mask_key):
    body = arrays["body_bgr_u8"]
    box = tuple(case["box_v15"])
    crop, s = geo.expanded_box(box)
    resized = geo.resize_parsing_mask(arrays[f"{key}_mask512_fed"], (2 * s, 2 * s))
    mask = geo.jaw_mask(resized, box, crop, blur_ratio=blur_ratio)
    out = geo.paste_face(body, arrays[f"{key}_face_bgr_u8"], box, crop, mask)
    return resized, mask, out, crop


@pytest.mark.parametrize("index", [0, 1, 2])
def test_paste_back_equals_upstream_given_its_mask(geometry, index):
    arrays, meta = geometry
    key, case = f"c{index}", meta["cases"][index]
    resized, mask, out, crop = _paste_case(arrays, case, key, 0.05, "mask")
    np.testing.assert_array_equal(resized, arrays[f"{key}_mask_resized"])
    np.testing.assert_array_equal(mask, arrays[f"{key}_mask_blurred"])
    y0, y1, x0, x1 = arrays[f"{key}_region_yx"]
    assert geo.region(crop, out.shape[:2]) == (y0, y1, x0, x1)
    np.testing.assert_array_equal(out[y0:y1, x0:x1], arrays[f"{key}_result_region_bgr_u8"])
    outside = np.ones(out.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], arrays["body_bgr_u8"][outside])
    _, rt_mask, rt_out, _ = _paste_case(arrays, case, key, 0.1, "rt")
    np.testing.assert_array_equal(rt_mask, arrays[f"{key}_rt_mask"])
    np.testing.assert_array_equal(rt_out[y0:y1, x0:x1], arrays[f"{key}_rt_result_region_bgr_u8"])


def test_mutation_unblurred_or_unclipped_mask_differs(geometry):
    """Mutation: skipping the upper-half cut changes the mask (the test above would catch it)."""
    arrays, meta = geometry
    case = meta["cases"][0]
    box = tuple(case["box_v15"])
    crop, s = geo.expanded_box(box)
    resized = geo.resize_parsing_mask(arrays["c0_mask512_fed"], (2 * s, 2 * s))
    full = geo.jaw_mask(resized, box, crop, upper_ratio=0.0)
    assert not np.array_equal(full, arrays["c0_mask_blurred"])


def test_frame_crops_and_paste(golden_frame):
    g = golden_frame
    for f in range(2):
        frame = g[f"frame{f}_bgr_u8"]
        box = tuple(int(v) for v in g["box_v15"][f])
        np.testing.assert_array_equal(geo.crop_face(frame, box), g["face_crop_bgr_u8"][f])
        face = geo.face_to_box(g["recon_bgr_u8"][f], box)
        np.testing.assert_array_equal(face, g[f"paste_face_bgr_u8_{f}"])
        crop, s = geo.expanded_box(box)
        mask = geo.jaw_mask(geo.resize_parsing_mask(g["mask512_fed"], (2 * s, 2 * s)), box, crop)
        out = geo.paste_face(frame, face, box, crop, mask)
        y0, y1, x0, x1 = g[f"blended_region_yx_{f}"]
        np.testing.assert_array_equal(out[y0:y1, x0:x1], g[f"blended_region_bgr_u8_{f}"])


def test_mesh_box_from_mesh_points():
    """The mesh's jaw and nose roles give an upstream-shaped box: chin at the bottom, nose at mid-height."""
    rng = np.random.default_rng(0)
    points = rng.uniform(100, 300, size=(468, 2))
    points[152] = (200, 400)  # chin lowest
    points[[195, 5]] = (200, 250)
    x1, y1, x2, y2 = geo.mesh_crop_box(points, (512, 512))
    jaw = points[list(geo.JAW_68)]
    assert (x1, x2) == (int(jaw[:, 0].min()), int(jaw[:, 0].max()))
    assert y1 == 250 - (400 - 250) and y2 == 410
    mask = geo.oval_mask(points, geo.expanded_box((x1, y1, x2, y2))[0])
    assert mask.dtype == np.uint8 and mask.max() == 255
