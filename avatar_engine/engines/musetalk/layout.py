"""MuseTalk's mounted files in upstream's own `models/` layout, loaded strictly into the library classes.

Mount upstream's tree unchanged as `MODEL_ROOT/musetalk/` (or point MUSETALK_DIR at it):

    musetalkV15/musetalk.json, musetalkV15/unet.pth   HF TMElyralab/MuseTalk (download_weights.sh)
    sd-vae/config.json, sd-vae/diffusion_pytorch_model.bin|.safetensors   HF stabilityai/sd-vae-ft-mse
    whisper/config.json, whisper/pytorch_model.bin|model.safetensors, whisper/preprocessor_config.json
                                                       HF openai/whisper-tiny

How upstream loads them, and what we keep of it:
* the UNet: `UNet2DConditionModel(**musetalk.json)` and a strict `load_state_dict(torch.load(unet.pth))` of a
  flat `{key: tensor}` (686 keys); here the same class from the same json, the file read weights-only;
* the VAE: `AutoencoderKL.from_pretrained(sd-vae)`; its file predates diffusers' attention rename, which
  `from_pretrained` converts (`query/key/value/proj_attn` -> `to_q/to_k/to_v/to_out.0`); we convert the same
  four names and load strictly (248 keys);
* whisper: `WhisperModel.from_pretrained(whisper)`, only its encoder used; we build the transformers
  `WhisperEncoder` from the same config and load the 67 `encoder.*` entries strictly (a
  WhisperForConditionalGeneration file's `model.` prefix stripped; decoder and `proj_out` ignored).
Every network is built on the meta device and the file's tensors assigned, so memory holds one copy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import AvatarError
from ...runtime.cache import ModelCache, file_key
from ...runtime.loading import read_checkpoint
from ...settings import Settings

if TYPE_CHECKING:
    import torch

UNET_CONFIG = Path("musetalkV15") / "musetalk.json"
UNET_WEIGHTS = Path("musetalkV15") / "unet.pth"
VAE_DIR = Path("sd-vae")
WHISPER_DIR = Path("whisper")
_WEIGHT_NAMES = {"sd-vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
                 "whisper": ("model.safetensors", "pytorch_model.bin")}
# sd-vae-ft-mse's file uses the attention names of diffusers < 0.15; from_pretrained renames them so.
_OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass(frozen=True)
class MuseTalkFiles:
    """The files of one mounted MuseTalk tree (paths may be missing: see `missing`)."""

    root: Path
    explicit: bool = False  # MUSETALK_DIR was set

    @property
    def unet_config(self) -> Path:
        return self.root / UNET_CONFIG

    @property
    def unet_weights(self) -> Path:
        return self.root / UNET_WEIGHTS

    @property
    def vae_dir(self) -> Path:
        return self.root / VAE_DIR

    @property
    def whisper_dir(self) -> Path:
        return self.root / WHISPER_DIR

    def weights(self, folder: Path) -> Path:
        """The folder's weights file (safetensors preferred), or its `.bin` name when none is there."""
        names = _WEIGHT_NAMES[folder.name]
        return next((folder / n for n in names if (folder / n).is_file()), folder / names[-1])

    def required(self) -> list[Path]:
        return [self.unet_config, self.unet_weights, self.vae_dir / "config.json", self.weights(self.vae_dir),
                self.whisper_dir / "config.json", self.weights(self.whisper_dir),
                self.whisper_dir / "preprocessor_config.json"]

    def missing(self) -> list[Path]:
        return [p for p in self.required() if not (p.is_file() and os.access(p, os.R_OK))]

    def missing_reason(self) -> str:
        missing = self.missing()
        where = "MUSETALK_DIR" if self.explicit else "MODEL_ROOT/musetalk"
        names = ", ".join(str(p.relative_to(self.root)) for p in missing[:4])
        return (f"MuseTalk files not found under {self.root} ({where}): missing {names}; mount upstream's models/ "
                f"tree (musetalkV15/, sd-vae/, whisper/)")

    def key(self) -> tuple:
        return file_key(*self.required())


def find_files(settings: Settings) -> MuseTalkFiles:
    """MUSETALK_DIR when set, else MODEL_ROOT/musetalk."""
    if settings.musetalk_dir is not None:
        return MuseTalkFiles(Path(settings.musetalk_dir), explicit=True)
    return MuseTalkFiles(Path(settings.model_root) / "musetalk")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AvatarError("engine_unavailable", f"config {path} could not be read: {exc}") from None
    if not isinstance(data, dict):
        raise AvatarError("engine_unavailable", f"config {path} holds no JSON object")
    return data


def assign_strict(module, state_dict: dict, path: Path, dtype: "torch.dtype | None" = None):
    """Load `state_dict` into a meta-device `module` strictly, assigning the file's tensors (no copy)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing keys (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"] if unexpected else []
        parts += [f"{len(shapes)} shape mismatches (e.g. {shapes[:2]})"] if shapes else []
        raise AvatarError("engine_unavailable", f"checkpoint {path} does not match the network: " + "; ".join(parts))
    target = dtype or next(iter(own.values())).dtype
    tensors = {k: v.to(target) if v.is_floating_point() and v.dtype != target else v for k, v in state_dict.items()}
    module.load_state_dict(tensors, strict=True, assign=True)
    return module.eval()


def build_unet(config: dict):
    """`UNet2DConditionModel` from a musetalk.json dict, on the meta device (fill or load it next)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


def build_vae(config: dict):
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL.from_config(config)


def build_whisper_encoder(config: dict):
    """The transformers whisper encoder from a whisper `config.json` dict, on the meta device."""
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    whisper_config = WhisperConfig.from_dict(config)
    with torch.device("meta"):
        return WhisperEncoder(whisper_config)


def vae_state_dict(raw: dict) -> dict:
    """Current diffusers names for an sd-vae file that may use the pre-0.15 attention names."""
    out = {}
    for key, tensor in raw.items():
        head, _, leaf = key.rpartition(".")
        module, _, name = head.rpartition(".")
        if ".attentions." in key and name in _OLD_VAE_ATTENTION:
            key = f"{module}.{_OLD_VAE_ATTENTION[name]}.{leaf}"
            if tensor.ndim == 4:  # very old conv-style 1x1 projections
                tensor = tensor[:, :, 0, 0]
        out[key] = tensor
    return out


def whisper_encoder_state_dict(raw: dict) -> dict:
    """The `encoder.*` entries of a WhisperModel / WhisperForConditionalGeneration file, prefix removed."""
    out = {}
    for key, tensor in raw.items():
        key = key[len("model."):] if key.startswith("model.") else key
        if key.startswith("encoder."):
            out[key[len("encoder."):]] = tensor
    return out


def _flat_tensors(path: Path) -> dict:
    raw = read_checkpoint(path)
    bad = [k for k, v in raw.items() if not hasattr(v, "shape")]
    if bad:
        raise AvatarError("engine_unavailable",
                          f"checkpoint {path} is not a flat state_dict: {bad[:3]} hold no tensors")
    return raw


@dataclass
class MuseTalkNets:
    """The three networks and the feature extractor, on one device and dtype."""

    unet: Any
    vae: Any
    whisper: Any
    extractor: Any
    device: "torch.device"
    dtype: "torch.dtype"


def load_nets(files: MuseTalkFiles, device=None, dtype=None) -> MuseTalkNets:
    """All of MuseTalk from its mounted tree (strict; `engine_unavailable` naming the file on any mismatch).

    fp16 on CUDA (upstream's realtime path always halves UNet, VAE and whisper), float32 elsewhere.
    """
    import torch
    from transformers import WhisperFeatureExtractor

    device = torch.device(device or "cpu")
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    if files.missing():
        raise AvatarError("engine_unavailable", files.missing_reason())
    unet = assign_strict(build_unet(read_json(files.unet_config)), _flat_tensors(files.unet_weights),
                         files.unet_weights, dtype)
    vae_file = files.weights(files.vae_dir)
    vae = assign_strict(build_vae(read_json(files.vae_dir / "config.json")),
                        vae_state_dict(_flat_tensors(vae_file)), vae_file, dtype)
    whisper_file = files.weights(files.whisper_dir)
    whisper = assign_strict(build_whisper_encoder(read_json(files.whisper_dir / "config.json")),
                            whisper_encoder_state_dict(_flat_tensors(whisper_file)), whisper_file, dtype)
    try:
        extractor = WhisperFeatureExtractor.from_pretrained(str(files.whisper_dir), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable preprocessor config
        raise AvatarError("engine_unavailable", f"{files.whisper_dir / 'preprocessor_config.json'} could not be "
                                                f"read: {type(exc).__name__}: {exc}") from None
    return MuseTalkNets(unet.to(device), vae.to(device), whisper.to(device), extractor, device, dtype)


# One loaded set per (files version, device type): the UNet alone is 3.4 GB in float32.
_NETS: ModelCache = ModelCache(max_entries=1)


def cached_nets(files: MuseTalkFiles, device=None) -> MuseTalkNets:
    import torch

    device = torch.device(device or "cpu")
    return _NETS.get((files.key(), device.type), lambda: load_nets(files, device))
