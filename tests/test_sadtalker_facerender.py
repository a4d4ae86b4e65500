"""SadTalker face renderer vs upstream goldens (det-filled weights): keys, outputs and per-channel probes."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avatar_engine.engines.sadtalker.nets.facerender import (
    SpectralNormConv2d,
    generator_256,
    he_estimator_256,
    kp_detector_256,
    render_frames,
)
from avatar_engine.netkit import fill_module

FIX = Path(__file__).parent / "fixtures" / "sadtalker"


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


@contextmanager
def _probes(model: nn.Module, paths: list[str]):
    """Record the output of the first call of each module path, reduced per channel (axis 1) in float64."""
    modules = dict(model.named_modules())
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    handles = []
    for path in paths:
        def hook(_m, _i, out, path=path):
            if path not in seen:
                o = out.detach().double()
                dims = [d for d in range(o.dim()) if d != 1]
                seen[path] = (o.mean(dims).numpy(), o.std(dims, unbiased=False).numpy())

        handles.append(modules[path].register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _run_golden(model: nn.Module, g: dict, fn) -> tuple[dict, dict]:
    paths = sorted({k.split(".", 1)[1] for k in g if k.startswith("out_probe_mean.")})
    with _probes(model, paths) as seen, torch.no_grad():
        outs = fn(model)
    return {k: v.numpy() for k, v in outs.items()}, seen


def _compare(g: dict, outs: dict, probes: dict, tol: dict, probe_tol: float) -> None:
    expected = sorted(k.removeprefix("out_") for k in g if k.startswith("out_") and not k.startswith("out_probe_"))
    assert sorted(outs) == expected
    errors = {k: _rel(outs[k], g[f"out_{k}"]) for k in outs}
    bad = {k: e for k, e in errors.items() if not e < tol.get(k, tol["*"])}
    assert probes.keys() == {k.split(".", 1)[1] for k in g if k.startswith("out_probe_mean.")}
    for path, (mean, std) in probes.items():
        for label, got in (("mean", mean), ("std", std)):
            e = _rel(got, g[f"out_probe_{label}.{path}"])
            if not e < probe_tol:
                bad[f"probe_{label}.{path}"] = e
    assert not bad, f"rel L2 above tolerance: {bad}"


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


def test_kpdetector_golden():
    model = kp_detector_256()
    assert _layout(model.state_dict()) == _keys("kpdetector")
    fill_module(model)
    g = _golden("kpdetector")
    outs, probes = _run_golden(model, g, lambda m: {"value": m(torch.from_numpy(g["in_image"]))})
    _compare(g, outs, probes, {"*": 5e-4}, 1e-4)


def test_kpdetector_down_buffer_is_gaussian_kernel():
    w = kp_detector_256().down.weight
    assert w.shape == (3, 1, 13, 13)
    torch.testing.assert_close(w.sum(dim=(1, 2, 3)), torch.ones(3))
    assert w[0, 0, 6, 6] == w.max() and torch.equal(w[0, 0], w[0, 0].T)


def test_heestimator_golden():
    model = he_estimator_256()
    assert _layout(model.state_dict()) == _keys("heestimator")
    fill_module(model)
    g = _golden("heestimator")
    outs, probes = _run_golden(model, g, lambda m: m(torch.from_numpy(g["in_image"])))
    _compare(g, outs, probes, {"*": 1e-4}, 1e-4)


# --------------------------------------------------------------------------- generator


@pytest.fixture(scope="module")
def generator():
    model = generator_256()
    assert _layout(model.state_dict()) == _keys("generator")
    return fill_module(model, _snuv(_golden("generator")))


def test_generator_keys_and_spade_decoder_subset():
    layout = _layout(generator_256().state_dict())
    assert layout == _keys("generator")
    assert [row for row in layout if row[0].startswith("decoder.")] == _keys("spade_decoder")


def test_generator_golden(generator):
    g = _golden("generator")

    def run(m):
        out = m(torch.from_numpy(g["in_source_image"]), torch.from_numpy(g["in_kp_driving"]),
                torch.from_numpy(g["in_kp_source"]))
        assert out["mask"].shape == (1, 16, 16, 64, 64)
        return {"prediction": out["prediction"], "occlusion_map": out["occlusion_map"],
                "deformation": out["deformation"], "mask_depth8": out["mask"][:, :, 8]}

    outs, probes = _run_golden(generator, g, run)
    # `prediction` is ill-conditioned under det weights (fp64 rerun deviates 1.7e-3): smoke tolerance only.
    _compare(g, outs, probes, {"*": 1e-4, "prediction": 1e-2}, 1e-4)


def test_spade_decoder_golden(generator):
    g = _golden("spade_decoder")
    gen_uv = _snuv(_golden("generator"))
    assert _snuv(g).keys() == gen_uv.keys()
    assert all(np.array_equal(v, gen_uv[k]) for k, v in _snuv(g).items())
    feature = torch.from_numpy(g["in_feature"].astype(np.float32))
    outs, probes = _run_golden(generator, g, lambda m: {"prediction": m.decoder(feature)})
    _compare(g, outs, probes, {"*": 1e-4}, 1e-4)


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
