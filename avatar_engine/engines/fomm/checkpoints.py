"""Finding and strictly loading the official FOMM vox-256 checkpoint.

Files (upstream README: Google Drive / Yandex Disk links; trained on VoxCeleb by A. Siarohin; code MIT):
`vox-cpk.pth.tar` and `vox-adv-cpk.pth.tar` (the adversarially fine-tuned one, same two networks).
Both are `Logger.save_cpk` dicts: `generator`, `kp_detector` (the two this worker needs, raw module
state dicts, no `module.` prefix), plus `discriminator`, `optimizer_*` and `epoch`, all ignored.
Written by torch 1.0 (legacy, non-zip serialization), which torch's weights-only loader still reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import AvatarError
from ...runtime.cache import ModelCache, file_key
from ...runtime.checkpoints import CheckpointLookup, find_checkpoint
from ...runtime.inventory import checkpoint_names
from ...runtime.loading import load_strict, read_checkpoint
from ...settings import Settings

if TYPE_CHECKING:  # torch is imported only when the networks are built: finding files stays cheap
    from .nets import FommConfig, KPDetector, OcclusionAwareGenerator

# Searched in this order under MODEL_ROOT/fomm/.
CHECKPOINT_NAMES = checkpoint_names("fomm")  # vox-cpk.pth.tar, then vox-adv-cpk.pth.tar (runtime/models.json)
NETWORK_ENTRIES = ("kp_detector", "generator")


def lookup(settings: Settings) -> CheckpointLookup:
    """FOMM_CKPT, else MODEL_ROOT/fomm/vox-cpk.pth.tar, else .../vox-adv-cpk.pth.tar (the runtime's policy:
    a wrong explicit path is reported, not silently replaced by another file)."""
    return find_checkpoint(settings.fomm_ckpt, "FOMM_CKPT", settings.model_root, "fomm", CHECKPOINT_NAMES)


def read_fomm_state_dicts(path: str | Path) -> dict[str, dict]:
    """{"kp_detector": state_dict, "generator": state_dict} of a `vox-*cpk.pth.tar` file."""
    path = Path(path)
    obj = read_checkpoint(path)  # engine_unavailable for missing / empty / truncated / code-carrying pickles
    out = {}
    for entry in NETWORK_ENTRIES:
        value = obj.get(entry)
        if not isinstance(value, dict):
            found = ", ".join(sorted(map(str, obj))[:10]) or "none"
            what = "is not a state dict" if entry in obj else "is missing"
            raise AvatarError(
                "engine_unavailable",
                f"checkpoint {path}: entry '{entry}' {what} (entries: {found}); expected a FOMM vox-cpk.pth.tar",
            )
        out[entry] = value
    return out


@dataclass
class FommNets:
    """The two inference networks, eval mode, gradients off (on the CPU unless `cached_fomm_nets` moved them)."""

    kp_detector: KPDetector
    generator: OcclusionAwareGenerator
    path: Path


def load_fomm_nets(path: str | Path, cfg: FommConfig | None = None) -> FommNets:
    """Build the vox-256 networks and load them strictly from `path`.

    Raises `AvatarError('engine_unavailable')` naming the file and what is wrong with it.
    """
    from .nets import VOX_256, KPDetector, OcclusionAwareGenerator

    path = Path(path)
    cfg = cfg or VOX_256
    state = read_fomm_state_dicts(path)
    kp_detector, generator = KPDetector(cfg), OcclusionAwareGenerator(cfg)
    load_strict(kp_detector, state.pop("kp_detector"), f"{path} [kp_detector]")
    load_strict(generator, state.pop("generator"), f"{path} [generator]")
    for net in (kp_detector, generator):
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
    return FommNets(kp_detector=kp_detector, generator=generator, path=path)


# One loaded checkpoint per (file version, device); two entries: a replaced file and its successor.
_CACHE: ModelCache = ModelCache(max_entries=2)


def cached_fomm_nets(path: str | Path, device=None) -> FommNets:
    """`load_fomm_nets` memoised per process on (resolved path, mtime, device type), moved to `device`
    (default: the CPU). A replaced file (new mtime) is loaded again."""
    import torch

    device = torch.device("cpu") if device is None else torch.device(device)

    def load() -> FommNets:
        nets = load_fomm_nets(path)
        nets.kp_detector.to(device)
        nets.generator.to(device)
        return nets

    return _CACHE.get((file_key(Path(path)), device.type), load)
