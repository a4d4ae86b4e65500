"""`{"action": "health"}` and `list_engines` with and without checkpoints in a temp MODEL_ROOT."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from avatar_engine.engines.wav2lip.nets import Wav2Lip
from avatar_engine.runtime.detweights import det_state_dict
from avatar_engine.runtime.inventory import checkpoint_path, checkpoint_status, load_inventory
from avatar_engine.serving.actions import run_action
from avatar_engine.settings import Settings
from builder import fetch_models

GFPGAN = load_inventory()["files"]["gfpgan_v14"]


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> Path:
    """A det-weight wav2lip_gan.pth, SadTalker's files (their presence is what status checks; loading is
    covered by tests/engines/sadtalker/), and a sparse file of GFPGAN's published size."""
    root = tmp_path_factory.mktemp("models")
    (root / "wav2lip").mkdir()
    state = {"module." + k: v for k, v in det_state_dict(Wav2Lip()).items()}
    torch.save({"state_dict": state, "optimizer": None, "global_step": 0, "global_epoch": 0},
               root / "wav2lip" / "wav2lip_gan.pth")
    (root / "sadtalker").mkdir()
    for name in ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar"):
        (root / "sadtalker" / name).write_bytes(b"x")
    (root / "gfpgan").mkdir()
    with open(root / "gfpgan" / "GFPGANv1.4.pth", "wb") as fh:
        fh.truncate(GFPGAN["size"])
    return root


def _health(settings: Settings) -> dict:
    run_action({"action": "health"}, settings)  # first call may import torch / probe NVENC (warm_up does too)
    t0 = time.perf_counter()
    out = run_action({"action": "health"}, settings)
    assert time.perf_counter() - t0 < 1.0, "health must answer well under a second on a warm worker"
    return out


def test_health_without_checkpoints(tmp_path):
    out = _health(Settings(model_root=tmp_path))
    assert out["ok"] and out["device"]["type"] in ("cpu", "cuda")
    assert isinstance(out["encoder"]["nvenc"], bool) and out["encoder"]["selected"] in ("libx264", "h264_nvenc")
    engines = out["engines"]
    assert engines["parametric"]["available"] and engines["parametric"]["auto"]
    assert "Apache-2.0" in engines["parametric"]["license"]
    for name in ("wav2lip", "sadtalker"):
        assert not engines[name]["available"] and not engines[name]["auto"]
        assert all(not c["found"] and c["checksum"] is None for c in engines[name]["checkpoints"].values())
    assert "non-commercial" in engines["wav2lip"]["license"]
    for name in ("fomm", "diff2lip"):  # reported even before (or without) the engine being built in
        assert not engines[name]["available"]
        assert all(not c["found"] for c in engines[name]["checkpoints"].values())
    assert engines["diff2lip"]["license"].startswith("CC BY-NC 4.0")
    assert not out["stages"]["gfpgan"]["available"]
    assert out["auto_chain"] and out["auto_chain"][-1] in ("parametric", "still")
    assert "sadtalker" not in out["auto_chain"] and "wav2lip" not in out["auto_chain"]


def test_health_with_checkpoints(full_root):
    out = _health(Settings(model_root=full_root, sadtalker_auto_min_gpu_gb=0))
    w2l = out["engines"]["wav2lip"]
    assert w2l["available"] and w2l["auto"]
    gan = w2l["checkpoints"]["wav2lip_gan"]
    assert gan["found"] and gan["size"] == (full_root / "wav2lip/wav2lip_gan.pth").stat().st_size
    assert gan["checksum"] == "unverified" and not gan["sha256_published"]  # upstream publishes no sha256
    assert not w2l["checkpoints"]["wav2lip"]["found"]
    st = out["engines"]["sadtalker"]
    assert st["available"] and st["auto"]
    assert st["checkpoints"]["sadtalker_256"]["found"] and not st["checkpoints"]["sadtalker_512"]["found"]
    assert "sadtalker" in out["auto_chain"] and "wav2lip" in out["auto_chain"]
    gfp = out["stages"]["gfpgan"]
    assert gfp["available"]
    ck = gfp["checkpoints"]["gfpgan_v14"]
    assert ck["size_ok"] and ck["checksum"] == "unverified"  # no verification record yet


def test_sadtalker_needs_a_gpu_for_auto_by_default(full_root):
    out = _health(Settings(model_root=full_root))
    st = out["engines"]["sadtalker"]
    assert st["available"]
    assert st["auto"] == (torch.cuda.is_available() and out["device"].get("gpu_total_gb", 0) >= 6)


def test_checksum_status_follows_the_builders_record(tmp_path):
    settings = Settings(model_root=tmp_path)
    path = tmp_path / GFPGAN["path"]
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        fh.truncate(GFPGAN["size"])
    fetch_models.write_record(path, GFPGAN["sha256"])  # what the builder writes after hashing
    assert checkpoint_status("gfpgan_v14", settings).checksum == "verified"
    fetch_models.write_record(path, "0" * 64)
    status = checkpoint_status("gfpgan_v14", settings)
    assert status.checksum == "mismatch"
    out = run_action({"action": "health"}, settings)
    assert not out["stages"]["gfpgan"]["available"]  # a file known to be wrong does not count
    fetch_models.write_record(path, GFPGAN["sha256"])
    os.utime(path, (1, 1))  # touched after verification: the record no longer vouches for it
    assert checkpoint_status("gfpgan_v14", settings).checksum == "unverified"
    with open(path, "r+b") as fh:
        fh.truncate(1000)
    status = checkpoint_status("gfpgan_v14", settings)
    assert status.size_ok is False and status.size == 1000


def test_overrides_point_where_the_engines_look(tmp_path):
    ckpt = tmp_path / "elsewhere.pth"
    ckpt.write_bytes(b"x")
    settings = Settings(model_root=tmp_path / "root", wav2lip_ckpt=ckpt, sadtalker_ckpt_dir=tmp_path / "st")
    assert checkpoint_path("wav2lip_gan", settings) == ckpt
    assert checkpoint_path("sadtalker_256", settings) == tmp_path / "st" / "SadTalker_V0.0.2_256.safetensors"
    assert checkpoint_path("gfpgan_v14", settings) == tmp_path / "root" / "gfpgan" / "GFPGANv1.4.pth"
    assert checkpoint_status("wav2lip_gan", settings).found


def test_list_engines_action_reports_license_and_auto(tmp_path):
    out = run_action({"action": "list_engines"}, Settings(model_root=tmp_path))
    engines = out["engines"]
    assert set(engines) >= {"parametric", "still", "wav2lip", "sadtalker", "fomm", "diff2lip"}
    for report in engines.values():
        assert {"available", "reason", "license", "auto", "checkpoints"} <= set(report)
    assert out["auto_chain"]
