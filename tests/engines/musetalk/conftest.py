"""MuseTalk test fixtures: the golden arrays (tests/fixtures/musetalk, copied from the shared fixture set; its
README says how upstream made them and which arrays catch which bug) and det-filled networks (DETWEIGHTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "musetalk"

torch.set_num_threads(2)


def rel_l2(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    ref = np.asarray(ref, dtype=np.float64)
    err = float(np.linalg.norm(out.astype(np.float64) - ref))
    norm = float(np.linalg.norm(ref))
    return err / norm if norm else err  # an all-zero reference (e.g. the std of a constant): absolute


def load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as z:
        return {k: z[k] for k in z.files}


def load_json(name: str):
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
def geometry() -> tuple[dict, dict]:
    return load_npz("golden_geometry.npz"), load_json("golden_geometry.json")


@pytest.fixture(scope="session")
def golden_frame() -> dict[str, np.ndarray]:
    return load_npz("golden_frame.npz")


@pytest.fixture(scope="session")
def configs() -> dict[str, dict]:
    """Upstream's three configs as shipped (see the fixture README)."""
    return {"unet": load_json("unet_config.json")["musetalk_json_as_shipped"],
            "vae": load_json("vae_config.json")["sd_vae_ft_mse_config_json"],
            "whisper": load_json("whisper_config.json")["whisper_tiny_architecture"]}


@pytest.fixture(scope="session")
def whisper(configs):
    """whisper-tiny's encoder filled by det_fill, and the feature extractor with upstream's settings."""
    from transformers import WhisperFeatureExtractor

    from avatar_engine.engines.musetalk.detweights import WHISPER_PREPROCESSOR, det_whisper_encoder

    return det_whisper_encoder(configs["whisper"]), WhisperFeatureExtractor(**WHISPER_PREPROCESSOR)


class Probes:
    """Per-channel mean/std (float64, ddof 0) of module outputs: over H, W for 4-D outputs, over tokens for 3-D
    (channels last), the output itself (std 0) for 2-D; a tuple output's first entry (down blocks' hidden)."""

    def __init__(self, model, names: list[str]):
        self.values: dict[str, list[np.ndarray]] = {}
        modules = dict(model.named_modules())
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in names]

    def _hook(self, name):
        def hook(module, args, output):
            out = (output[0] if isinstance(output, tuple) else output).detach().double()
            if out.ndim == 4:
                mean, std = out.mean(dim=(2, 3)), out.std(dim=(2, 3), unbiased=False)
            elif out.ndim == 3:
                mean, std = out.mean(dim=1), out.std(dim=1, unbiased=False)
            else:
                mean, std = out, torch.zeros_like(out)
            self.values.setdefault(f"mean.{name}", []).append(mean.cpu().numpy())
            self.values.setdefault(f"std.{name}", []).append(std.cpu().numpy())
        return hook

    def get(self, key: str) -> np.ndarray:
        return np.concatenate(self.values[key])

    def close(self):
        for handle in self.handles:
            handle.remove()


def probe_names(golden: dict, prefix: str) -> list[str]:
    """Module names probed in a golden file (`probe_mean.<name>` keys under `prefix`)."""
    return sorted({k.split(".", 1)[1] for k in golden if k.startswith(prefix)})


def tiny_configs(configs: dict) -> dict[str, dict]:
    """Upstream's configs made small (channel counts, layers) but keeping every structural choice: the UNet's
    8 -> 4 channels, cross-attention width 384 and block types; the VAE's 4 blocks (32x32 latents of 256 px);
    whisper-tiny unchanged (8 M parameters, and its width is the UNet's cross-attention width)."""
    unet = {**configs["unet"], "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1}
    vae = {**configs["vae"], "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1}
    return {"unet": unet, "vae": vae, "whisper": configs["whisper"]}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, configs) -> Path:
    """MODEL_ROOT with a small det-weight MuseTalk written as upstream's models/ tree under musetalk/."""
    from avatar_engine.engines.musetalk.detweights import write_tree

    root = tmp_path_factory.mktemp("musetalk-models")
    tiny = tiny_configs(configs)
    write_tree(root / "musetalk", tiny["unet"], tiny["vae"], tiny["whisper"])
    return root
