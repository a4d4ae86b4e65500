"""SadTalker checkpoint discovery and strict loading, with test-written files in both release layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avatar_engine.engines.sadtalker import checkpoints as ck
from avatar_engine.engines.sadtalker.nets.reconnet import ReconNetWrapper
from avatar_engine.errors import AvatarError
from avatar_engine.runtime.loading import load_strict

OPTIMIZER = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999), "params": [0, 1]}]}


def _random_state(net: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (torch.rand(v.shape, generator=g, dtype=torch.float32).to(v.dtype) if v.is_floating_point() else v.clone())
        for k, v in net.state_dict().items()
    }


def _assert_loaded(net: torch.nn.Module, expected: dict) -> None:
    got = net.state_dict()
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


def _touch(d: Path, *names: str) -> None:
    for n in names:
        (d / n).write_bytes(b"x")


# ------------------------------------------------------------------ discovery


def test_find_prefers_size_safetensors_and_picks_mapping(tmp_path):
    assert ck.find_sadtalker_checkpoints(tmp_path) is None
    _touch(tmp_path, "SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", *ck.OLD_FILES.values())
    found = ck.find_sadtalker_checkpoints(tmp_path, 256, "crop")
    assert found.layout == "safetensors"
    assert found.safetensors == tmp_path / "SadTalker_V0.0.2_256.safetensors"
    assert found.mapping == tmp_path / "mapping_00229-model.pth.tar"
    old = ck.find_sadtalker_checkpoints(tmp_path, 512, "crop")  # no 512 file: the old set is complete
    assert old.layout == "old" and old.net_recon == tmp_path / "epoch_20.pth"
    assert old.facevid2vid == tmp_path / "facevid2vid_00189-model.pth.tar"
    assert ck.find_sadtalker_checkpoints(tmp_path, 256, "full") is None  # needs mapping_00109
    _touch(tmp_path, "mapping_00109-model.pth.tar")
    assert ck.find_sadtalker_checkpoints(tmp_path, 256, "extfull").mapping.name == "mapping_00109-model.pth.tar"
    assert ck.mapping_coeff_nc("full") == 73 and ck.mapping_coeff_nc("resize") == 70
    with pytest.raises(ValueError):
        ck.safetensors_name(384)


def test_load_nets_reports_missing_files(tmp_path):
    _touch(tmp_path, "epoch_20.pth")
    with pytest.raises(AvatarError) as err:
        ck.load_sadtalker_nets(tmp_path)
    assert err.value.code == "engine_unavailable"
    msg = err.value.message
    assert "mapping_00229-model.pth.tar" in msg and "SadTalker_V0.0.2_256.safetensors" in msg
    assert "auido2exp_00300-model.pth" in msg and "epoch_20.pth" not in msg


# ------------------------------------------------------------------ ReconNet in both layouts (fast)


def test_reconnet_from_safetensors_prefix_split(tmp_path):
    sd = _random_state(ReconNetWrapper(), 1)
    flat = {f"face_3drecon.{k}": v for k, v in sd.items()}
    flat["audio2exp.mapping1.weight"] = torch.zeros(64, 577)  # substring 'mapping', not a group here
    flat["other.face_3drecon.x"] = torch.zeros(1)  # upstream's substring rule would grab this one
    flat["generator.decoder.x"] = torch.ones(2)
    path = tmp_path / "SadTalker_V0.0.2_256.safetensors"
    save_file(flat, str(path))
    groups = ck.load_sadtalker_safetensors(path)
    assert set(groups) == set(ck.SAFETENSORS_PREFIXES)
    assert list(groups["generator"]) == ["decoder.x"] and groups["kp_extractor"] == {}
    assert list(groups["audio2exp"]) == ["mapping1.weight"]
    net = ReconNetWrapper()
    load_strict(net, groups["face_3drecon"], path)
    _assert_loaded(net, sd)


def test_reconnet_from_old_epoch_file_with_numpy_scalars(tmp_path):
    sd = _random_state(ReconNetWrapper(), 2)
    path = tmp_path / "epoch_20.pth"
    # Training state as the old files hold it; numpy scalars need the weights-only allow-list.
    torch.save({"net_recon": sd, "optimizer": OPTIMIZER, "epoch": np.int64(20), "loss": np.float64(0.25)}, path)
    with pytest.raises(AvatarError):  # torch's defaults alone refuse numpy scalars
        ck.read_checkpoint(path)
    obj = ck.read_torch_checkpoint(path)
    assert obj["epoch"] == 20
    net = ReconNetWrapper()
    load_strict(net, obj["net_recon"], path)
    _assert_loaded(net, sd)
    assert not any("numpy" in str(g) for g in torch.serialization.get_safe_globals())


def test_numpy1_style_pickle_names_are_allowed(tmp_path):
    # Files written under numpy 1.x name `numpy.core.multiarray.scalar`; emulate with the legacy format.
    path = tmp_path / "old.pth"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": np.float64(3.0)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    if b"numpy._core.multiarray" in raw:
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    obj = ck.read_torch_checkpoint(path)
    assert obj["epoch"] == 3.0 and torch.equal(obj["model"]["w"], torch.ones(2))


def test_unsafe_pickle_still_refused(tmp_path):
    import argparse

    path = tmp_path / "bad.pth"
    torch.save({"model": {}, "opt": argparse.Namespace(lr=1)}, path)
    with pytest.raises(AvatarError) as err:
        ck.read_torch_checkpoint(path)
    assert err.value.code == "engine_unavailable"


def test_missing_entry_and_shape_mismatch(tmp_path):
    path = tmp_path / "mapping_00229-model.pth.tar"
    torch.save({"generator": {}, "epoch": 1}, path)
    with pytest.raises(AvatarError, match="no 'mapping' state dict"):
        ck.load_mapping_checkpoint(path)
    sd = _random_state(ReconNetWrapper(), 3)
    sd["final_layers.0.bias"] = torch.zeros(81)
    with pytest.raises(AvatarError, match="shape mismatch"):
        load_strict(ReconNetWrapper(), sd, path)


# ------------------------------------------------------------------ every network, both layouts


@pytest.fixture(scope="module")
def states():
    """Random state dicts for every network SadTalker loads (crop mapping, coeff_nc 70)."""
    names = ("audio2exp", "audio2pose", "kp_extractor", "generator", "face_3drecon", "mapping")
    try:
        return {n: _random_state(ck._build(n, "crop"), i) for i, n in enumerate(names)}
    except ImportError as exc:  # pragma: no cover - the other ports are written in parallel
        pytest.skip(f"SadTalker network modules not available yet: {exc}")


def _check_nets(nets: ck.SadTalkerNets, states: dict) -> None:
    for attr, name in (("audio2exp", "audio2exp"), ("audio2pose", "audio2pose"), ("kp_extractor", "kp_extractor"),
                       ("generator", "generator"), ("reconnet", "face_3drecon"), ("mapping", "mapping")):
        net = getattr(nets, attr)
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        _assert_loaded(net, states[name])


@pytest.mark.slow
def test_all_nets_from_safetensors_layout(tmp_path, states):
    flat = {f"{p}.{k}": v for p in ck.SAFETENSORS_PREFIXES for k, v in states[p].items()}
    save_file(flat, str(tmp_path / "SadTalker_V0.0.2_256.safetensors"))
    del flat
    torch.save({"mapping": states["mapping"], "discriminator": {}, "optimizer_mapping": OPTIMIZER, "epoch": 229},
               tmp_path / "mapping_00229-model.pth.tar")
    nets = ck.load_sadtalker_nets(tmp_path, size=256, preprocess="crop")
    assert nets.checkpoints.layout == "safetensors"
    _check_nets(nets, states)


@pytest.mark.slow
def test_all_nets_from_old_layout(tmp_path, states):
    he = {"fc_yaw.weight": torch.zeros(66, 2048)}  # HEEstimator: read but never built
    torch.save({"model": states["audio2exp"], "optimizer": OPTIMIZER, "epoch": 300}, tmp_path / "auido2exp_00300-model.pth")
    torch.save({"model": states["audio2pose"], "optimizer": OPTIMIZER, "epoch": np.int64(140)},
               tmp_path / "auido2pose_00140-model.pth")
    torch.save({"generator": states["generator"], "kp_detector": states["kp_extractor"], "he_estimator": he,
                "discriminator": {}, "optimizer_generator": OPTIMIZER, "epoch": 189},
               tmp_path / "facevid2vid_00189-model.pth.tar")
    torch.save({"net_recon": states["face_3drecon"], "optimizer": OPTIMIZER, "epoch": 20}, tmp_path / "epoch_20.pth")
    torch.save({"mapping": states["mapping"], "optimizer_mapping": OPTIMIZER, "epoch": 229},
               tmp_path / "mapping_00229-model.pth.tar")
    groups = ck.load_old_checkpoints(tmp_path, "crop")
    assert set(groups) == {"audio2exp", "audio2pose", "generator", "kp_extractor", "he_estimator", "mapping",
                           "face_3drecon"}
    del groups
    nets = ck.load_sadtalker_nets(tmp_path, size=512, preprocess="crop")
    assert nets.checkpoints.layout == "old" and nets.size == 512
    _check_nets(nets, states)
