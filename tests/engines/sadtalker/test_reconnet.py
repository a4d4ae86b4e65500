"""SadTalker ReconNet + 5-point alignment against upstream goldens (tests/fixtures/sadtalker, det_fill weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from avatar_engine.engines.sadtalker import preprocess as sp
from avatar_engine.engines.sadtalker.nets.reconnet import ReconNetWrapper
from avatar_engine.runtime.detweights import fill_module
from tests.support.golden import (
    as64,
    assert_defect_caught,
    assert_golden,
    edited,
    first_outputs,
    float64_copy,
    probe_arrays,
    swap_rows,
)
from tests.support.media import ASSETS
from tests.support.media import FIXTURES as FIXTURE_ROOT

FIX = FIXTURE_ROOT / "sadtalker"
PROBES = ("maxpool", "layer1", "layer2", "layer3", "layer4")


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def net():
    return fill_module(ReconNetWrapper())


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIX / "golden_reconnet.npz"))


@pytest.fixture(scope="module")
def align():
    return dict(np.load(FIX / "golden_preprocess_align.npz"))


@pytest.fixture(scope="module")
def astronaut():
    return np.array(Image.open(ASSETS / "astronaut_512.png").convert("RGB"))


def test_state_dict_layout_matches_checkpoint():
    want = json.loads((FIX / "keys_reconnet.json").read_text())
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in ReconNetWrapper().state_dict().items()]
    assert got == want


# Tolerances (rel L2). float64 rebuild: a fixed, CPU-independent distance from the float32 golden.
RECON_TOL = {
    "out_coeffs": 2e-6,  # float64: README fp64 deviation 1.9e-7 (10x)
    "out_probe_*": 1e-4,  # float64: README 2.8e-6 (35x); probes are where early-layer defects show
}


def _run_recon(model, golden) -> dict:
    with first_outputs(model, [f"backbone.{p}" for p in PROBES]) as seen, torch.no_grad():
        coeffs = model(as64(golden["in_image"]))
    return {"out_coeffs": coeffs, **probe_arrays(seen)}


def test_outputs_and_probes_match_golden(net, golden):
    got = _run_recon(float64_copy(net), golden)
    assert got["out_coeffs"].shape == (1, 257)
    stored = {k for k in golden if k.startswith("out_") and k != "out_coeff_3dmm_73"}  # that one: image path below
    assert_golden(got, golden, RECON_TOL, expected=stored)


def test_mutation_swapped_stem_channels_fails(net, golden):
    """Two output channels of the ResNet stem conv swapped (a mis-ordered port) must fail the golden."""
    model = float64_copy(net)
    with edited(model.backbone.conv1.weight, swap_rows(0, 1)):
        bad = assert_defect_caught(_run_recon(model, golden), golden, RECON_TOL)
    assert "out_probe_std.backbone.maxpool" in bad


def test_lm3d_std_constants(align):
    assert sp.LM3D_STD.dtype == np.float32
    assert np.array_equal(sp.LM3D_STD, align["lm3d_std"])
    assert np.array_equal(sp.default_lm5(256, 256), align["lm5"])


def test_align_img_is_exact(align):
    img224, trans = sp.align_img(align["img256_uint8"], align["lm5"], align["lm3d_std"])
    assert img224.dtype == np.uint8 and img224.shape == (224, 224, 3)
    assert np.array_equal(img224, align["img224_uint8"])
    assert trans.dtype == np.float32
    assert np.array_equal(trans, align["trans_params"])
    assert rel(sp.recon_input(img224).numpy(), align["recon_input"]) < 1e-6


def test_coeffs_from_image_fallback_matches_golden(net, golden, align, astronaut):
    # Upstream path for "no landmarks": 512 png -> cv2 256 -> standard points -> align -> ReconNet.
    coeff = sp.coeffs_from_image(net, astronaut, None)
    assert coeff.shape == (1, 73) and coeff.dtype == np.float32
    assert rel(coeff, golden["out_coeff_3dmm_73"]) < 1e-4  # float32 path: fp32 deviation <= 2.1e-7 on AVX2 (470x)
    assert np.array_equal(coeff[0, 70:], align["trans_params"][2:])


def test_coeffs_from_image_landmarks_in_source_pixels(net, astronaut):
    # The fallback points expressed as y-down pixels of the 512 source must give the same crop and coefficients.
    lm256_up = sp.default_lm5(256, 256)
    lm512_down = np.stack([(lm256_up[:, 0] + 0.5) * 2 - 0.5, (255 - lm256_up[:, 1] + 0.5) * 2 - 0.5], axis=1)
    a = sp.coeffs_from_image(net, astronaut, lm512_down)
    b = sp.coeffs_from_image(net, astronaut, None)
    assert rel(a, b) < 1e-5


def test_degenerate_landmarks_raise_no_face(align):
    from avatar_engine.errors import AvatarError

    for lm in (np.full((5, 2), 100.0, np.float32), np.full((5, 2), np.nan, np.float32)):
        with pytest.raises(AvatarError) as err:
            sp.align_img(align["img256_uint8"], lm)
        assert err.value.code == "no_face"
