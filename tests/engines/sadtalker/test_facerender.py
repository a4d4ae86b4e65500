"""SadTalker face renderer vs upstream goldens (det-filled weights): keys, outputs and per-channel probes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avatar_engine.engines.sadtalker.nets.facerender import (
    SpectralNormConv2d,
    generator_256,
    kp_detector_256,
)
from avatar_engine.runtime.detweights import fill_module
from tests.support.golden import (
    as64,
    assert_defect_caught,
    assert_golden,
    conv3d_by_slices,
    first_outputs,
    float64_copy,
    probe_arrays,
    probe_paths,
)
from tests.support.media import FIXTURES as FIXTURE_ROOT
from tests.support.sadtalker import he_estimator_256, render_frames

FIX = FIXTURE_ROOT / "sadtalker"

# Tolerances (rel L2). Every golden is recomputed in float64: that lands a fixed distance from the float32
# golden (its own fp32 rounding; README "max fp64 deviation"), the same on any CPU. Float32 reruns move
# with the CPU: on AVX2-only kernels the generator probe `...hourglass.encoder.down_blocks.4` std reached
# 1.34e-4 (issue #11 saw 1.35e-4 on an EPYC) and the generator `prediction` 3.3e-3, so no probe and no
# ill-conditioned output is compared in float32.
KP_TOL = {
    "out_value": 5e-4,  # float64: README 5.6e-5 (9x); near-uniform heatmap, the expectation cancels
    "out_probe_*": 1e-4,  # float64: README 1.4e-5 (7x); the kp probes carry the early-layer evidence
}
HE_TOL = {
    "out_*": 2e-6,  # float64 outputs: README 2.0e-7 (10x)
    "out_probe_*": 1e-4,  # float64: README 9.0e-6 (11x)
}
HE_FLOAT32_TOL = {"out_*": 1e-4}  # float32 outputs: fp32 deviation <= 2.5e-7 on AVX-512 and AVX2 (400x)
GENERATOR_TOL = {
    "out_deformation": 1e-6,  # float64: README <= 1e-7 (measured 9.5e-8), 10x
    "out_occlusion_map": 1e-6,  # float64: README <= 1e-7 (measured 4.2e-8)
    "out_mask_depth8": 1e-6,  # float64: README <= 1e-7 (measured 6.6e-8)
    "out_prediction": 1e-2,  # float64: README 1.7e-3 (6x, a fixed number in float64); SPADE on near-constant
    # features is ill-conditioned, so this is a smoke check and spade_decoder carries the decoder evidence
    "out_probe_*": 1e-4,  # float64: README <= 6.9e-6 (14x); float32 reached 1.34e-4 on AVX2
}
SPADE_TOL = {
    "out_prediction": 1e-4,  # float64: README 1.4e-5 (7x); a half-channel 1 % scale moves it 5e-5..3e-4
    "out_probe_*": 1e-4,  # float64: README 1.3e-5 (8x); per-conv probes move up to 5e-3 on such defects
}


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(FIX / f"golden_{name}.npz") as z:
        return {k: z[k] for k in z.files}


def _keys(name: str) -> list:
    return json.loads((FIX / f"keys_{name}.json").read_text())


def _layout(state_dict: dict) -> list:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state_dict.items()]


def _rel(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _snuv(g: dict) -> dict:
    """Spectral-norm u/v overrides stored as `snuv.<key>` (the README's exception to det_fill)."""
    return {k.removeprefix("snuv."): v for k, v in g.items() if k.startswith("snuv.")}


# --------------------------------------------------------------------------- spectral norm


def test_spectral_norm_conv_matches_old_torch_api():
    torch.manual_seed(0)
    for bias, k in ((True, 3), (False, 1)):
        ref = nn.utils.spectral_norm(nn.Conv2d(5, 7, k, padding=k // 2, bias=bias))
        ref.train()
        ref(torch.randn(1, 5, 6, 6))  # one power iteration, so u/v are not the initial ones
        ref.eval()
        ours = SpectralNormConv2d(5, 7, k, padding=k // 2, bias=bias).eval()
        assert _layout(ours.state_dict()) == _layout(ref.state_dict())
        assert [n for n, _ in ours.named_buffers()] == ["weight_u", "weight_v"]
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(2, 5, 6, 6)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- KPDetector / HEEstimator


def _stored(g: dict) -> set[str]:
    return {k for k in g if k.startswith("out_")}


@pytest.fixture(scope="module")
def kp_detector64():
    model = kp_detector_256()
    assert _layout(model.state_dict()) == _keys("kpdetector")
    return float64_copy(fill_module(model))


def _run_kp(model, g: dict) -> dict:
    with first_outputs(model, probe_paths(g)) as seen, torch.no_grad():
        value = model(as64(g["in_image"]))
    return {"out_value": value, **probe_arrays(seen)}


def test_kpdetector_golden(kp_detector64):
    g = _golden("kpdetector")
    assert_golden(_run_kp(kp_detector64, g), g, KP_TOL, expected=_stored(g))


def test_kpdetector_mutation_wrong_antialias_padding_fails(kp_detector64, monkeypatch):
    """Padding 5 instead of 6 around the 13x13 anti-alias blur (samples shift by a pixel) must fail.

    (Only one pixel less *after* the image is no defect at all: with stride 4 the last window never reaches it.)
    """
    g = _golden("kpdetector")
    monkeypatch.setattr(kp_detector64.down, "pad_before", kp_detector64.down.pad_before - 1)
    monkeypatch.setattr(kp_detector64.down, "pad_after", kp_detector64.down.pad_after - 1)
    bad = assert_defect_caught(_run_kp(kp_detector64, g), g, KP_TOL)
    assert "out_probe_std.down" in bad


def test_kpdetector_down_buffer_is_gaussian_kernel():
    w = kp_detector_256().down.weight
    assert w.shape == (3, 1, 13, 13)
    torch.testing.assert_close(w.sum(dim=(1, 2, 3)), torch.ones(3))
    assert w[0, 0, 6, 6] == w.max() and torch.equal(w[0, 0], w[0, 0].T)


@pytest.fixture(scope="module")
def he_estimator():
    model = he_estimator_256()
    assert _layout(model.state_dict()) == _keys("heestimator")
    return fill_module(model)


def _run_he(model, g: dict, probes: bool = True) -> dict:
    dtype = next(model.parameters()).dtype
    with first_outputs(model, probe_paths(g) if probes else []) as seen, torch.no_grad():
        out = model(torch.from_numpy(g["in_image"]).to(dtype))
    return {**{f"out_{k}": v for k, v in out.items()}, **probe_arrays(seen)}


def test_heestimator_golden(he_estimator):
    g = _golden("heestimator")
    assert_golden(_run_he(float64_copy(he_estimator), g), g, HE_TOL, expected=_stored(g))
    outputs = {k for k in _stored(g) if not k.startswith("out_probe_")}
    assert_golden(_run_he(he_estimator, g, probes=False), g, HE_FLOAT32_TOL, expected=outputs)


def test_heestimator_mutation_wrong_maxpool_padding_fails(he_estimator, monkeypatch):
    """The stem max-pool without its padding of 1 (64 -> 63 px) must fail the golden."""
    g = _golden("heestimator")
    model = float64_copy(he_estimator)
    monkeypatch.setattr(model.maxpool, "padding", 0)
    bad = assert_defect_caught(_run_he(model, g), g, HE_TOL)
    assert "out_probe_std.maxpool" in bad


# --------------------------------------------------------------------------- generator


@pytest.fixture(scope="module")
def generator():
    model = generator_256()
    assert _layout(model.state_dict()) == _keys("generator")
    return fill_module(model, _snuv(_golden("generator")))


@pytest.fixture(scope="module")
def generator64(generator):
    return conv3d_by_slices(float64_copy(generator))


def test_generator_keys_and_spade_decoder_subset():
    layout = _layout(generator_256().state_dict())
    assert layout == _keys("generator")
    assert [row for row in layout if row[0].startswith("decoder.")] == _keys("spade_decoder")


@pytest.mark.slow
def test_generator_golden(generator64):
    g = _golden("generator")
    with first_outputs(generator64, probe_paths(g)) as seen, torch.no_grad():
        out = generator64(as64(g["in_source_image"]), as64(g["in_kp_driving"]), as64(g["in_kp_source"]))
    assert out["mask"].shape == (1, 16, 16, 64, 64)
    got = {"out_prediction": out["prediction"], "out_occlusion_map": out["occlusion_map"],
           "out_deformation": out["deformation"], "out_mask_depth8": out["mask"][:, :, 8], **probe_arrays(seen)}
    assert_golden(got, g, GENERATOR_TOL, expected=_stored(g))


def _run_spade(model, g: dict) -> dict:
    with first_outputs(model, probe_paths(g)) as seen, torch.no_grad():
        prediction = model.decoder(as64(g["in_feature"].astype(np.float32)))  # stored float16: exact values
    return {"out_prediction": prediction, **probe_arrays(seen)}


def test_spade_decoder_golden(generator64):
    g = _golden("spade_decoder")
    gen_uv = _snuv(_golden("generator"))
    assert _snuv(g).keys() == gen_uv.keys()
    assert all(np.array_equal(v, gen_uv[k]) for k, v in _snuv(g).items())
    assert_golden(_run_spade(generator64, g), g, SPADE_TOL, expected=_stored(g))


def test_generator_mutation_missing_spade_residual_fails(generator64, monkeypatch):
    """The decoder's first SPADE ResBlock without its identity shortcut must fail the spade_decoder golden."""
    g = _golden("spade_decoder")
    block = generator64.decoder.G_middle_0

    def no_shortcut(x, seg):
        dx = block.conv_0(F.leaky_relu(block.norm_0(x, seg), 0.2))
        return block.conv_1(F.leaky_relu(block.norm_1(dx, seg), 0.2))

    monkeypatch.setattr(block, "forward", no_shortcut)
    bad = assert_defect_caught(_run_spade(generator64, g), g, SPADE_TOL)
    assert "out_probe_std.decoder.G_middle_0" in bad


@pytest.mark.slow
def test_render_frames_batch_equals_single_calls(generator):
    """3 frames rendered in chunks (2 + 1) == 3 independent upstream-style `generator(...)` calls (128 px)."""
    torch.manual_seed(0)
    source = torch.rand(1, 3, 128, 128)
    kp_source = torch.rand(1, 15, 3) - 0.5
    kp_driving = kp_source + 0.05 * torch.randn(3, 15, 3)

    frames = render_frames(generator, source, kp_source, kp_driving, batch_size=2)
    assert frames.shape == (3, 3, 128, 128) and not frames.requires_grad

    with torch.no_grad():
        singles = [generator(source, kp_driving[i:i + 1], kp_source) for i in range(3)]
        feature = generator.encode_source(source).expand(3, -1, -1, -1, -1)
        batched = generator.dense_motion_network(feature, kp_driving, kp_source.expand(3, -1, -1))
    for key in ("deformation", "occlusion_map", "mask"):
        assert _rel(batched[key], torch.cat([s[key] for s in singles])) < 1e-5, key
    # The decoder input is nearly constant per channel under det weights, so its InstanceNorms amplify fp32
    # rounding (in float64 batch and single calls agree to 1e-11): the prediction check is a smoke test.
    assert _rel(frames, torch.cat([s["prediction"] for s in singles])) < 2e-2
