"""The model doctor tells good, missing, truncated, HTML-instead-of-weights, random and TorchScript files
apart, exits nonzero when a file it finds cannot be loaded, and every manifest entry names a source."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from avatar_engine.cli import main as cli_main
from avatar_engine.runtime.doctor import examine, summary
from avatar_engine.runtime.inventory import load_inventory
from avatar_engine.runtime.loading import sniff_checkpoint
from avatar_engine.settings import Settings
from builder import fetch_models as fm


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture()
def root(tmp_path):
    """One file of each kind, under the manifest names the doctor checks."""
    from avatar_engine.engines.wav2lip.nets import Wav2Lip

    for folder in ("gfpgan", "wav2lip", "fomm"):
        (tmp_path / folder).mkdir()
    state = {"module." + k: v for k, v in Wav2Lip().state_dict().items()}
    torch.save({"state_dict": state, "optimizer": {}, "global_step": 1, "global_epoch": 1},
               tmp_path / "wav2lip/wav2lip_gan.pth")  # good: upstream's training layout
    torch.save({"params_ema": {"w": torch.zeros(4096)}}, tmp_path / "small.pth")
    small = (tmp_path / "small.pth").read_bytes()
    (tmp_path / "gfpgan/GFPGANv1.4.pth").write_bytes(small[: len(small) // 2])  # truncated
    (tmp_path / "wav2lip/wav2lip.pth").write_text("<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    (tmp_path / "fomm/vox-cpk.pth.tar").write_bytes(os.urandom(4096))  # random bytes
    torch.jit.save(torch.jit.script(_Tiny()), tmp_path / "wav2lip/Wav2Lip-SD-GAN.pt")  # TorchScript, not Wav2Lip
    return tmp_path


def _files(report) -> dict:
    return {f["key"]: f for comp in report.components.values() for f in comp["files"]}


def test_doctor_tells_the_kinds_of_file_apart(root):
    report = examine(Settings(model_root=root), "sadtalker")
    files = _files(report)
    good = files["wav2lip_gan"]
    assert good["loads"] is True and good["format"] == "torch-zip"
    assert good["params"] == 36_298_035 and good["dtype"] == "float32" and good["form"] == "state dict -> port"
    assert files["sadtalker_256"]["found"] is False and "MODEL_URLS" in files["sadtalker_256"]["todo"]
    assert files["gfpgan_v14"]["format"] == "truncated" and files["gfpgan_v14"]["loads"] is False
    assert "truncated at" in files["gfpgan_v14"]["error"] and "fetch it again" in files["gfpgan_v14"]["todo"]
    assert files["wav2lip"]["format"] == "html" and "HTML page" in files["wav2lip"]["error"]
    assert files["fomm_vox"]["format"] == "unknown" and "unknown bytes" in files["fomm_vox"]["error"]
    assert files["wav2lip_sd_gan"]["format"] == "torchscript" and files["wav2lip_sd_gan"]["loads"] is False
    assert "TorchScript" in files["wav2lip_sd_gan"]["error"]
    assert report.components["wav2lip"]["can_run"] and not report.components["gfpgan"]["can_run"]
    assert not report.ok and any("sadtalker" in p for p in report.problems)


def test_cli_exit_status_and_json(root, tmp_path, capsys):
    assert cli_main(["models", "--root", str(root), "--json"]) == 1  # found files that do not load
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["components"]["wav2lip"]["can_run"] is True
    clean = tmp_path / "clean"
    (clean / "wav2lip").mkdir(parents=True)
    (clean / "wav2lip/wav2lip_gan.pth").write_bytes((root / "wav2lip/wav2lip_gan.pth").read_bytes())
    assert cli_main(["models", "--root", str(clean)]) == 0  # nothing promised, nothing broken
    assert "loads strictly" in capsys.readouterr().out
    assert cli_main(["models", "--root", str(clean), "--image", "sadtalker"]) == 1  # promised engines missing


def test_health_summary_is_cheap_and_flags_broken_files(root):
    out = summary(Settings(model_root=root))
    assert out["files"]["wav2lip"]["format"] == "html" and "wav2lip" in out["broken"]
    assert out["files"]["sadtalker_256"] == {"found": False, "format": None, "size": None, "loads": None, "form": None}


def test_sniffer_names_legacy_pickle_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.save({"a": torch.zeros(3)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    save_file({"a": torch.zeros(1000)}, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    assert sniff_checkpoint(tmp_path / "old.pth").kind == "legacy-pickle"
    assert sniff_checkpoint(tmp_path / "w.safetensors").kind == "safetensors"
    cut = sniff_checkpoint(tmp_path / "cut.safetensors")
    assert cut.kind == "truncated" and f"truncated at {len(data) - 100} of {len(data)} bytes" in cut.detail


def test_every_manifest_entry_has_a_source():
    manifest = load_inventory()
    for key, spec in manifest["files"].items():
        entry = fm.entry_from(manifest, key)
        assert entry.candidates(), f"{key} has no source"
        for source in entry.candidates():
            assert source.kind in ("http", "gdrive", "gdrive_folder") and source.url.startswith("https://")
            assert source.role in ("upstream", "mirror", "override")
            assert source.kind != "gdrive_folder" or source.file == spec["path"].rsplit("/", 1)[-1]
        for other in spec.get("fallback_files", []):
            assert other in manifest["files"]
        assert spec.get("forms"), f"{key}: which forms are accepted?"
        assert spec["sha256"] is None or len(spec["sha256"]) == 64


def test_the_doctor_shows_the_license_policy_and_never_counts_a_kept_out_model_as_broken(tmp_path):
    from avatar_engine.runtime.doctor import examine, render_text
    from avatar_engine.settings import Settings

    report = examine(Settings(model_root=tmp_path, model_licenses="commercial"), "sadtalker", load=False)
    assert report.to_dict()["license_policy"] == "commercial"
    assert report.components["wav2lip"]["allowed"] is False
    assert not any(p.startswith("wav2lip:") for p in report.problems)
    text = render_text(report)
    assert "license policy (MODEL_LICENSES): commercial" in text and "kept out by MODEL_LICENSES=commercial" in text
