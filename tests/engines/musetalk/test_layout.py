"""Loading upstream's published layout strictly: key lists (keys_*.json), det_fill sums, the old VAE attention
names, the whisper file's prefixes, and the errors a broken tree gives."""

from __future__ import annotations

import shutil

import pytest
import torch

from avatar_engine.engines.musetalk import layout
from avatar_engine.engines.musetalk.detweights import det_vae, det_whisper_encoder
from avatar_engine.errors import AvatarError

from .conftest import load_json


def test_key_lists_match_upstream(configs):
    """Built from the shipped configs, the three networks have upstream's state_dict keys, shapes and order."""
    unet = layout.build_unet(configs["unet"])
    assert [[k, list(v.shape), "float32"] for k, v in unet.state_dict().items()] == load_json("keys_unet.json")
    vae = layout.build_vae(configs["vae"])
    assert [[k, list(v.shape), "float32"] for k, v in vae.state_dict().items()] == load_json("keys_vae.json")
    enc = layout.build_whisper_encoder(configs["whisper"])
    assert [[f"encoder.{k}", list(v.shape), "float32"] for k, v in enc.state_dict().items()] == \
        load_json("keys_whisper_encoder.json")
    counts = load_json("param_counts.json")
    assert sum(p.numel() for p in unet.parameters()) == counts["unet"]["parameters"]
    assert sum(p.numel() for p in vae.parameters()) == counts["vae"]["parameters"]


@pytest.mark.slow
def test_det_fill_sums(configs):
    """netkit's det_fill gives the fixtures' per-key sums (VAE and whisper here; the UNet in test_unet)."""
    sums = load_json("detfill_sums.json")
    for name, module, prefix in (("vae", det_vae(configs["vae"]), ""),
                                 ("whisper_encoder", det_whisper_encoder(configs["whisper"]), "encoder.")):
        for key, tensor in module.state_dict().items():
            total, absolute = sums[name][prefix + key]
            assert abs(float(tensor.double().sum()) - total) <= 1e-6 * max(1.0, absolute), key
            assert abs(float(tensor.double().abs().sum()) - absolute) <= 1e-9 * max(1.0, absolute), key


def test_old_vae_attention_names_are_converted():
    raw = {"decoder.mid_block.attentions.0.query.weight": torch.zeros(2, 2, 1, 1),
           "decoder.mid_block.attentions.0.proj_attn.bias": torch.zeros(2),
           "decoder.mid_block.attentions.0.group_norm.weight": torch.zeros(2)}
    out = layout.vae_state_dict(raw)
    assert set(out) == {"decoder.mid_block.attentions.0.to_q.weight", "decoder.mid_block.attentions.0.to_out.0.bias",
                        "decoder.mid_block.attentions.0.group_norm.weight"}
    assert out["decoder.mid_block.attentions.0.to_q.weight"].shape == (2, 2)


def test_whisper_prefixes():
    raw = {"model.encoder.conv1.weight": 1, "model.decoder.x": 2, "proj_out.weight": 3, "encoder.layer_norm.bias": 4}
    assert layout.whisper_encoder_state_dict(raw) == {"conv1.weight": 1, "layer_norm.bias": 4}


@pytest.mark.slow
def test_tree_loads_strictly(tiny_root):
    files = layout.MuseTalkFiles(tiny_root / "musetalk")
    assert files.missing() == []
    nets = layout.load_nets(files)
    assert nets.dtype == torch.float32 and nets.device.type == "cpu"
    assert not any(p.is_meta for p in nets.unet.parameters())
    assert nets.vae.config.scaling_factor == pytest.approx(0.18215)


@pytest.mark.slow
def test_broken_trees_fail_with_engine_unavailable(tiny_root, tmp_path):
    broken = tmp_path / "musetalk"
    shutil.copytree(tiny_root / "musetalk", broken)
    files = layout.MuseTalkFiles(broken)
    (broken / "sd-vae" / "diffusion_pytorch_model.bin").unlink()
    assert "sd-vae/diffusion_pytorch_model.bin" in files.missing_reason()
    with pytest.raises(AvatarError) as err:
        layout.load_nets(files)
    assert err.value.code == "engine_unavailable"
    shutil.copy(tiny_root / "musetalk" / "sd-vae" / "diffusion_pytorch_model.bin", broken / "sd-vae")
    state = torch.load(broken / "musetalkV15" / "unet.pth")
    state.pop("conv_out.bias")
    torch.save(state, broken / "musetalkV15" / "unet.pth")
    with pytest.raises(AvatarError) as err:
        layout.load_nets(files)
    assert err.value.code == "engine_unavailable" and "conv_out.bias" in err.value.message
