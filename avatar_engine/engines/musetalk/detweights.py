"""Det-filled MuseTalk networks (the fixtures' rule, `runtime.detweights.det_fill`) and a tree of them in upstream's file
layout: how tests and `make bench` prove the port without trained weights. Never used to render."""

from __future__ import annotations

import json
from pathlib import Path

from ...runtime.detweights import det_fill
from . import layout

# Upstream's three configs (tests/fixtures/musetalk/*_config.json): musetalk.json as shipped with the weights,
# sd-vae-ft-mse's config.json, whisper-tiny's architecture fields and its preprocessor settings.
WHISPER_PREPROCESSOR = {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
                        "padding_value": 0.0, "padding_side": "right", "return_attention_mask": False, "n_fft": 400,
                        "hop_length": 160, "chunk_length": 30, "n_samples": 480000, "nb_max_frames": 3000}


def fill_meta(module):
    """Assign det_fill tensors to every state_dict entry of a (meta-device) module; returns it in eval()."""
    import torch

    tensors = {key: torch.from_numpy(det_fill(key, tuple(t.shape))) for key, t in module.state_dict().items()}
    module.load_state_dict(tensors, strict=True, assign=True)
    return module.eval()


def det_unet(config: dict):
    return fill_meta(layout.build_unet(config))


def det_vae(config: dict):
    return fill_meta(layout.build_vae(config))


def det_whisper_encoder(config: dict):
    """The encoder filled under the `WhisperModel` names (`encoder.*`) the fixtures used."""
    import torch

    encoder = layout.build_whisper_encoder(config)
    tensors = {k: torch.from_numpy(det_fill(f"encoder.{k}", tuple(t.shape))) for k, t in encoder.state_dict().items()}
    encoder.load_state_dict(tensors, strict=True, assign=True)
    return encoder.eval()


def write_tree(root: Path, unet_config: dict, vae_config: dict, whisper_config: dict) -> Path:
    """Write det-filled networks as upstream's `models/` tree (unet.pth a flat dict; sd-vae with the
    pre-rename attention names; whisper as a WhisperForConditionalGeneration-style `model.`-prefixed file)."""
    import torch

    root = Path(root)
    for sub in ("musetalkV15", "sd-vae", "whisper"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / layout.UNET_CONFIG).write_text(json.dumps(unet_config))
    torch.save(det_unet(unet_config).state_dict(), root / layout.UNET_WEIGHTS)
    (root / "sd-vae" / "config.json").write_text(json.dumps(vae_config))
    old_names = {v: k for k, v in layout._OLD_VAE_ATTENTION.items()}
    vae_sd = {}
    for key, tensor in det_vae(vae_config).state_dict().items():
        for new, old in old_names.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        vae_sd[key] = tensor
    torch.save(vae_sd, root / "sd-vae" / "diffusion_pytorch_model.bin")
    (root / "whisper" / "config.json").write_text(json.dumps({"model_type": "whisper", **whisper_config}))
    (root / "whisper" / "preprocessor_config.json").write_text(json.dumps(WHISPER_PREPROCESSOR))
    encoder = det_whisper_encoder(whisper_config)
    prefixed = {f"model.encoder.{k}": v for k, v in encoder.state_dict().items()}
    torch.save(prefixed, root / "whisper" / "pytorch_model.bin")
    return root
