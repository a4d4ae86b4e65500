"""GFPGAN v1.3/v1.4 port vs upstream goldens (det-filled weights), and official-layout checkpoint loading."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from avatar_engine.errors import AvatarError
from avatar_engine.runtime.detweights import fill_module
from avatar_engine.stages.restore.nets import GFPGANv1Clean, gfpgan_v14, load_gfpgan
from tests.support.golden import assert_defect_caught, assert_golden, edited, swap_rows
from tests.support.media import FIXTURES as FIXTURE_ROOT

FIXTURES = FIXTURE_ROOT / "gfpgan"
RGB_SIZES = (8, 16, 32, 64, 128, 256, 512)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIXTURES / "golden.npz"))


@pytest.fixture(scope="module")
def model():
    return fill_module(gfpgan_v14())


def input_tensor(golden, dtype) -> torch.Tensor:
    """The input exactly as GFPGANer builds it: u8/255 in float64, then float32, then (x-0.5)/0.5."""
    x = torch.from_numpy((golden["input_u8"] / 255.0).astype(np.float32)).permute(2, 0, 1)[None]
    return ((x - 0.5) / 0.5).to(dtype)


def run_with_style_code(net, x):
    codes = []
    hook = net.final_linear.register_forward_hook(lambda _m, _i, out: codes.append(out.detach().clone()))
    try:
        with torch.no_grad():
            image, rgbs = net(x, return_rgb=True)
    finally:
        hook.remove()
    return image, rgbs, codes[0]


@pytest.fixture(scope="module")
def float32_run(model, golden):
    return run_with_style_code(model, input_tensor(golden, torch.float32))


@pytest.fixture(scope="module")
def float64_run(model, golden):
    net = copy.deepcopy(model).double()
    return run_with_style_code(net, input_tensor(golden, torch.float64))


def test_state_dict_matches_official_layout(model):
    expected = json.loads((FIXTURES / "keys.json").read_text())["params_ema"]
    state = model.state_dict()
    assert list(state) == [key for key, _, _ in expected]
    for key, shape, dtype in expected:
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key


# Tolerances (rel L2). float32: README noise <= 4.3e-7 (mkldnn off; fresh process bit-exact) and fp32-vs-fp64
# 7.4e-8, so 1e-4 leaves >= 230x for another CPU's float32 rounding; the side outputs are where input and
# encoder defects show in float32 (mirrored input 2.5e-2, BGR 5.3e-3 on out_rgb_512).
FLOAT32_TOL = {
    "output": 1e-4,  # the restored face: README noise 3.3e-8 (3000x)
    "style_code": 1e-4,  # final_linear output: well conditioned (README <= 4.3e-7 for all side arrays)
    "out_rgb_*": 1e-4,  # toRGB side outputs: README <= 4.3e-7 (230x)
}
# float64 rebuild vs the float64 golden: README noise 0 (mkldnn on/off); a +1/255 brightness offset moves
# output_stride4 by 1.8e-8 (18x), BGR by 2.4e-7, so 1e-9 keeps the power and float64 rounding (~1e-15) fits.
FLOAT64_TOL = {"output_stride4": 1e-9, "style_code": 1e-9}


def _float32_arrays(run) -> dict:
    image, rgbs, style_code = run
    return {"output": image, "style_code": style_code, **{f"out_rgb_{s}": r for s, r in zip(RGB_SIZES, rgbs)}}


def test_float32_outputs_match_golden(float32_run, golden):
    assert [r.shape[-1] for r in float32_run[1]] == list(RGB_SIZES)
    assert_golden(_float32_arrays(float32_run), golden, FLOAT32_TOL)


def test_float64_matches_golden(float64_run):
    """The strong check: input/encoder bugs hide below float32 tolerance in `output` but not here."""
    ref = np.load(FIXTURES / "golden_f64.npz")
    image, _, style_code = float64_run
    assert image.dtype == torch.float64
    assert_golden({"output_stride4": image[..., ::4, ::4], "style_code": style_code}, ref, FLOAT64_TOL)


def test_mutation_swapped_input_channels_fails(model, golden):
    """Red and blue of the first conv swapped (the net fed BGR, as GFPGANer's cv2 input would be) must fail."""
    with edited(model.conv_body_first.weight, swap_rows(0, 2, dim=1)):
        bad = assert_defect_caught(_float32_arrays(run_with_style_code(model, input_tensor(golden, torch.float32))),
                                   golden, FLOAT32_TOL)
    assert "out_rgb_512" in bad


def test_default_forward_uses_fixed_noise(model, golden, float32_run):
    """Defaults are randomize_noise=False and no side outputs: same image as the golden run, bit for bit."""
    with torch.no_grad():
        image, rgbs = model(input_tensor(golden, torch.float32))
    assert rgbs == []
    assert torch.equal(image, float32_run[0])


@pytest.mark.parametrize("container_key", ["params_ema", "params"])
def test_load_official_layout(model, tmp_path, container_key):
    path = tmp_path / "GFPGANv1.4.pth"
    state = model.state_dict()
    torch.save({container_key: state, "other": 1}, path)
    loaded = load_gfpgan(path)
    loaded_state = loaded.state_dict()
    assert not loaded.training
    for key in ("conv_body_first.weight", "final_linear.bias", "stylegan_decoder.noises.noise14",
                "stylegan_decoder.style_convs.13.modulated_conv.weight"):
        assert torch.equal(loaded_state[key], state[key]), key
    path.unlink()


def test_prefers_params_ema_over_params(tmp_path):
    path = tmp_path / "both.pth"
    torch.save({"params": {"x": torch.zeros(1)}, "params_ema": {"y": torch.zeros(1)}}, path)
    with pytest.raises(AvatarError) as err:
        load_gfpgan(path)
    assert err.value.code == "engine_unavailable"
    assert "'y'" in err.value.message and "'x'" not in err.value.message


def test_truncated_checkpoint_is_engine_unavailable(tmp_path):
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": {"w": torch.arange(100_000, dtype=torch.float32)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AvatarError) as err:
        load_gfpgan(path)
    assert err.value.code == "engine_unavailable"
    assert str(path) in err.value.message


@pytest.mark.parametrize("content", [{"model": {"w": torch.zeros(2)}}, {"params_ema": {"w": torch.zeros(2)}}])
def test_wrong_content_is_engine_unavailable(tmp_path, content):
    path = tmp_path / "not_gfpgan.pth"
    torch.save(content, path)
    with pytest.raises(AvatarError) as err:
        load_gfpgan(path)
    assert err.value.code == "engine_unavailable"


def test_missing_file_is_engine_unavailable(tmp_path):
    with pytest.raises(AvatarError) as err:
        load_gfpgan(tmp_path / "absent.pth")
    assert err.value.code == "engine_unavailable"


def test_other_configurations_build_and_run():
    """The non-v1.4 branches (shared latent, style MLP, full-channel SFT) at a small size."""
    net = GFPGANv1Clean(out_size=64, num_style_feat=64, channel_multiplier=1, fix_decoder=True, num_mlp=2,
                        input_is_latent=False, different_w=False, narrow=0.25, sft_half=False)
    fill_module(net)
    assert net.final_linear.out_features == 64
    assert not any(p.requires_grad for p in net.stylegan_decoder.parameters())
    with torch.no_grad():
        image, rgbs = net(torch.zeros(2, 3, 64, 64), return_rgb=True)
    assert image.shape == (2, 3, 64, 64) and torch.isfinite(image).all()
    assert [r.shape[-1] for r in rgbs] == [8, 16, 32, 64]
