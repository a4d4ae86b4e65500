"""FOMM checkpoint lookup and strict loading, with test-written `vox-cpk.pth.tar`-layout files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from avatar_engine.engines.fomm import checkpoints as ck
from avatar_engine.engines.fomm.nets import FommConfig, KPDetector, OcclusionAwareGenerator
from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings
from tests.support import checkpoints as support_ck

# a tiny network of the same layout (keys differ only in sizes): fast files for the error paths
TINY = FommConfig(kp_block_expansion=4, kp_max_features=8, kp_num_blocks=2, gen_block_expansion=4,
                  gen_max_features=8, num_bottleneck_blocks=1, dm_block_expansion=4, dm_max_features=8,
                  dm_num_blocks=2)


def _random_state(net: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.rand(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v.clone())
            for k, v in net.state_dict().items()}


def _cpk(kp_state: dict, gen_state: dict) -> dict:
    """What upstream's Logger.save_cpk writes."""
    adam = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}},
            "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "eps": 1e-8, "weight_decay": 0, "params": [0]}]}
    return {"generator": gen_state, "kp_detector": kp_state,
            "discriminator": {"discs.1.conv.weight": torch.zeros(2, 2)},
            "optimizer_generator": adam, "optimizer_discriminator": adam, "optimizer_kp_detector": adam,
            "epoch": 99}


def _assert_loaded(net: torch.nn.Module, expected: dict) -> None:
    got = net.state_dict()
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


@pytest.fixture
def tiny_file(tmp_path):
    kp_state, gen_state = _random_state(KPDetector(TINY), 1), _random_state(OcclusionAwareGenerator(TINY), 2)
    path = tmp_path / "vox-cpk.pth.tar"
    torch.save(_cpk(kp_state, gen_state), path)
    return path, kp_state, gen_state


# --- lookup ----------------------------------------------------------------------------------


def test_lookup_order_and_explicit_path(tmp_path):
    settings = Settings(model_root=tmp_path)
    assert support_ck.find_fomm_checkpoint(settings) is None
    with pytest.raises(AvatarError) as err:
        support_ck.require_fomm_checkpoint(settings)
    assert err.value.code == "engine_unavailable" and "vox-cpk.pth.tar" in err.value.message
    (tmp_path / "fomm").mkdir()
    adv = tmp_path / "fomm" / "vox-adv-cpk.pth.tar"
    adv.write_bytes(b"x")
    assert support_ck.find_fomm_checkpoint(settings) == adv
    plain = tmp_path / "fomm" / "vox-cpk.pth.tar"
    plain.write_bytes(b"x")
    assert support_ck.find_fomm_checkpoint(settings) == plain  # vox-cpk first

    explicit = Settings(model_root=tmp_path, fomm_ckpt=tmp_path / "elsewhere.pth.tar")
    assert support_ck.find_fomm_checkpoint(explicit) is None  # a wrong explicit path is not replaced by MODEL_ROOT's
    with pytest.raises(AvatarError) as err:
        support_ck.require_fomm_checkpoint(explicit)
    assert err.value.code == "engine_unavailable" and "elsewhere.pth.tar" in err.value.message
    (tmp_path / "elsewhere.pth.tar").write_bytes(b"x")
    assert support_ck.require_fomm_checkpoint(explicit) == tmp_path / "elsewhere.pth.tar"


def test_fomm_ckpt_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FOMM_CKPT", str(tmp_path / "x.pth.tar"))
    assert Settings().fomm_ckpt == tmp_path / "x.pth.tar"


# --- loading ---------------------------------------------------------------------------------


def test_strict_load_of_a_vox_cpk_layout_file(tiny_file):
    path, kp_state, gen_state = tiny_file
    nets = ck.load_fomm_nets(path, TINY)
    _assert_loaded(nets.kp_detector, kp_state)
    _assert_loaded(nets.generator, gen_state)
    assert not nets.generator.training and not any(p.requires_grad for p in nets.kp_detector.parameters())
    assert nets.path == path


@pytest.mark.slow
def test_full_size_legacy_format_checkpoint_loads_and_is_cached(tmp_path):
    """The real files were written by torch 1.0: legacy (non-zip) serialization, read weights-only."""
    kp_state, gen_state = _random_state(KPDetector(), 3), _random_state(OcclusionAwareGenerator(), 4)
    path = tmp_path / "vox-adv-cpk.pth.tar"
    torch.save(_cpk(kp_state, gen_state), path, _use_new_zipfile_serialization=False)
    ck._CACHE.clear()
    try:
        nets = ck.cached_fomm_nets(path)
        _assert_loaded(nets.kp_detector, kp_state)
        _assert_loaded(nets.generator, gen_state)
        assert ck.cached_fomm_nets(path) is nets  # same file, same mtime: no reload
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert ck.cached_fomm_nets(path) is not nets  # replaced file: reloaded
    finally:
        ck._CACHE.clear()


def _error(path, cfg=TINY) -> AvatarError:
    with pytest.raises(AvatarError) as err:
        ck.load_fomm_nets(path, cfg)
    assert err.value.code == "engine_unavailable"
    assert str(path) in err.value.message
    return err.value


def test_truncated_empty_missing_and_foreign_files(tiny_file, tmp_path):
    path, _, _ = tiny_file
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(truncated).message
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    assert "empty" in _error(empty).message
    assert "does not exist" in _error(tmp_path / "nope.pth.tar").message
    png = tmp_path / "image.pth.tar"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    _error(png)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth.tar"
    with open(evil, "wb") as fh:
        pickle.dump({"kp_detector": Evil()}, fh, protocol=2)
    _error(evil)  # weights_only refuses code-carrying pickles


def test_missing_entry_and_mismatched_keys(tmp_path, tiny_file):
    _, kp_state, gen_state = tiny_file
    no_gen = tmp_path / "no_gen.pth.tar"
    torch.save({"kp_detector": kp_state, "epoch": 1}, no_gen)
    msg = _error(no_gen).message
    assert "'generator' is missing" in msg and "kp_detector" in msg
    not_dict = tmp_path / "not_dict.pth.tar"
    torch.save({"kp_detector": kp_state, "generator": torch.zeros(3)}, not_dict)
    assert "'generator' is not a state dict" in _error(not_dict).message
    other_net = tmp_path / "sadtalker.pth.tar"
    torch.save(_cpk(kp_state, gen_state), other_net)
    msg = _error(other_net, FommConfig()).message  # tiny weights into the vox-256 network
    assert "[kp_detector]" in msg and "shape mismatches" in msg
    partial = dict(gen_state)
    partial.pop("final.bias")
    missing_key = tmp_path / "missing_key.pth.tar"
    torch.save(_cpk(kp_state, partial), missing_key)
    msg = _error(missing_key).message
    assert "[generator]" in msg and "final.bias" in msg
