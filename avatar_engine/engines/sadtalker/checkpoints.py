"""Finding and strictly loading SadTalker's official checkpoints, in both release layouts.

* New layout (v0.0.2-rc): `SadTalker_V0.0.2_<size>.safetensors` holding audio2exp, audio2pose, kp_extractor,
  generator and face_3drecon under those key prefixes, plus the separate MappingNet file.
* Old layout (v0.0.2): `auido2exp_00300-model.pth`, `auido2pose_00140-model.pth` (upstream's spelling),
  `facevid2vid_00189-model.pth.tar`, `epoch_20.pth`, plus the MappingNet file.

MappingNet always comes from `mapping_00229-model.pth.tar` (coeff_nc 70, preprocess crop/extcrop/resize) or
`mapping_00109-model.pth.tar` (coeff_nc 73, preprocess full/extfull). HEEstimator is not built: SadTalker's
inference never runs it (the safetensors file does not even contain it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import AvatarError
from ...runtime.loading import load_strict, read_checkpoint

if TYPE_CHECKING:  # torch loads only when networks are built: finding checkpoints must stay cheap
    from torch import nn

SAFETENSORS_PREFIXES = ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")
OLD_FILES = {
    "audio2exp": "auido2exp_00300-model.pth",
    "audio2pose": "auido2pose_00140-model.pth",
    "facevid2vid": "facevid2vid_00189-model.pth.tar",
    "net_recon": "epoch_20.pth",
}
SIZES = (256, 512)


def safetensors_name(size: int) -> str:
    """File name of the packaged checkpoint for render size 256 or 512."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    return f"SadTalker_V0.0.2_{size}.safetensors"


def mapping_name(preprocess: str) -> str:
    """MappingNet file for a preprocess mode (upstream: any mode containing 'full' uses the still model)."""
    return "mapping_00109-model.pth.tar" if "full" in preprocess else "mapping_00229-model.pth.tar"


def mapping_coeff_nc(preprocess: str) -> int:
    """MappingNet input channels: 73 (70 + crop params) for 'full' modes, else 70."""
    return 73 if "full" in preprocess else 70


@dataclass(frozen=True)
class SadTalkerCheckpoints:
    """Paths of one complete checkpoint set; `safetensors` is set for the new layout, the rest for the old."""

    mapping: Path
    safetensors: Path | None = None
    audio2exp: Path | None = None
    audio2pose: Path | None = None
    facevid2vid: Path | None = None
    net_recon: Path | None = None

    @property
    def layout(self) -> str:
        return "safetensors" if self.safetensors is not None else "old"


def _missing(ckpt_dir: Path, size: int, preprocess: str) -> list[str]:
    """Files absent for a complete set (empty when complete); lists the new-layout choice when neither is."""
    mapping = [] if (ckpt_dir / mapping_name(preprocess)).is_file() else [mapping_name(preprocess)]
    if (ckpt_dir / safetensors_name(size)).is_file():
        return mapping
    old = [name for name in OLD_FILES.values() if not (ckpt_dir / name).is_file()]
    if not old:
        return mapping
    return mapping + [f"{safetensors_name(size)} (or the old files: {', '.join(old)})"]


def find_sadtalker_checkpoints(
    ckpt_dir: str | os.PathLike, size: int = 256, preprocess: str = "crop"
) -> SadTalkerCheckpoints | None:
    """The checkpoint set found in `ckpt_dir`, preferring the size's safetensors over the old files; None if
    incomplete. Like upstream, the old layout has one renderer (facevid2vid_00189) whatever the size."""
    d = Path(ckpt_dir)
    if _missing(d, size, preprocess):
        return None
    mapping = d / mapping_name(preprocess)
    if (d / safetensors_name(size)).is_file():
        return SadTalkerCheckpoints(mapping=mapping, safetensors=d / safetensors_name(size))
    return SadTalkerCheckpoints(mapping=mapping, **{k: d / v for k, v in OLD_FILES.items()})


def _numpy_safe_globals() -> list:
    """numpy bool/int/float/complex scalars and arrays: reconstructors under both the numpy-1 (`numpy.core`) and numpy-2 (`numpy._core`)
    names. They only rebuild plain data (no code), so they are safe to allow in a weights-only load."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    out: list = [np.dtype, np.ndarray]
    out += sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"}, key=str)  # BUILD targets of dtype pickles
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray.scalar, f"{mod}.scalar"), (multiarray._reconstruct, f"{mod}._reconstruct")]
    return out


def read_torch_checkpoint(path: str | os.PathLike) -> dict:
    """`read_checkpoint` (weights_only=True); if the pickle needs more than torch's defaults, retry once still
    weights-only but allowing numpy scalars/arrays.

    The old training files store `epoch`, optimizer state and possibly numpy scalars (e.g. a loss or epoch
    saved as `numpy.float64`), which torch >= 2.6's weights-only unpickler rejects; `weights_only=False` would
    execute arbitrary pickled code and is never used. Anything else still fails with `engine_unavailable`.
    """
    import torch

    try:
        return read_checkpoint(path)
    except AvatarError as exc:
        if "UnpicklingError" not in exc.message:
            raise
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        return read_checkpoint(path)


def _entry(obj: dict, key: str, path: Path) -> dict:
    value = obj.get(key)
    if not isinstance(value, dict):
        found = ", ".join(sorted(map(str, obj))[:10])
        raise AvatarError("engine_unavailable", f"checkpoint {path} has no '{key}' state dict (entries: {found})")
    return value


def load_sadtalker_safetensors(path: str | os.PathLike) -> dict[str, dict]:
    """{prefix: state_dict} for the five `SAFETENSORS_PREFIXES` (absent prefixes give empty dicts).

    Upstream selects keys by substring (`prefix in key`) and strips `prefix + '.'`. For the released key set
    this equals selecting by the leading `prefix + '.'` (the only other substring hit, `audio2exp.mapping1.*`,
    is for 'mapping', which is not in this file); matching the leading prefix cannot pick up foreign keys.
    Keys under no known prefix are ignored, as upstream does.
    """
    flat = read_checkpoint(path)
    out: dict[str, dict] = {p: {} for p in SAFETENSORS_PREFIXES}
    for key, value in flat.items():
        prefix, _, rest = key.partition(".")
        if prefix in out and rest:
            out[prefix][rest] = value
    return out


def load_old_checkpoints(ckpt_dir: str | os.PathLike, preprocess: str = "crop") -> dict[str, dict]:
    """State dicts of the old separate files, named like the safetensors prefixes plus `he_estimator` and
    `mapping`: audio2exp/audio2pose `['model']`, facevid2vid `['generator']`, `['kp_detector']` (-> kp_extractor),
    `['he_estimator']`, mapping `['mapping']`, epoch_20 `['net_recon']` (-> face_3drecon). Optimizer, epoch and
    discriminator entries are dropped."""
    d = Path(ckpt_dir)
    out: dict[str, dict] = {}
    for file_key, entries in (
        ("audio2exp", {"model": "audio2exp"}),
        ("audio2pose", {"model": "audio2pose"}),
        ("facevid2vid", {"generator": "generator", "kp_detector": "kp_extractor", "he_estimator": "he_estimator"}),
        ("net_recon", {"net_recon": "face_3drecon"}),
    ):
        path = d / OLD_FILES[file_key]
        obj = read_torch_checkpoint(path)
        for entry, target in entries.items():
            out[target] = _entry(obj, entry, path)
        del obj
    out["mapping"] = load_mapping_checkpoint(d / mapping_name(preprocess))
    return out


def load_mapping_checkpoint(path: str | os.PathLike) -> dict:
    """`['mapping']` state dict of a `mapping_*-model.pth.tar` file."""
    return _entry(read_torch_checkpoint(path), "mapping", Path(path))


@dataclass
class SadTalkerNets:
    """The inference networks, in eval mode with gradients off."""

    audio2exp: nn.Module
    audio2pose: nn.Module
    kp_extractor: nn.Module
    generator: nn.Module
    mapping: nn.Module
    reconnet: nn.Module
    size: int
    preprocess: str
    checkpoints: SadTalkerCheckpoints


def _build(name: str, preprocess: str) -> nn.Module:
    """Fresh network for a state-dict group name (imports lazily: the facerender nets are large)."""
    if name == "audio2exp":
        from .nets.audio2coeff import SimpleWrapperV2

        return SimpleWrapperV2()
    if name == "audio2pose":
        from .nets.audio2coeff import Audio2Pose

        return Audio2Pose()
    if name == "kp_extractor":
        from .nets.facerender import kp_detector_256

        return kp_detector_256()
    if name == "generator":
        from .nets.facerender import generator_256

        return generator_256()
    if name == "mapping":
        from .nets.mapping import MappingNet

        return MappingNet(coeff_nc=mapping_coeff_nc(preprocess), descriptor_nc=1024, layer=3, num_kp=15, num_bins=66)
    if name == "face_3drecon":
        from .nets.reconnet import ReconNetWrapper

        return ReconNetWrapper()
    raise ValueError(name)


def _load(name: str, preprocess: str, state_dict: dict, source: str) -> nn.Module:
    net = _build(name, preprocess)
    load_strict(net, state_dict, source)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_sadtalker_nets(ckpt_dir: str | os.PathLike, size: int = 256, preprocess: str = "crop") -> SadTalkerNets:
    """Build and strictly load every inference network from `ckpt_dir` (either layout).

    Raises `AvatarError('engine_unavailable')` naming missing files, unreadable files or mismatched keys.
    """
    d = Path(ckpt_dir)
    found = find_sadtalker_checkpoints(d, size, preprocess)
    if found is None:
        missing = _missing(d, size, preprocess)
        raise AvatarError("engine_unavailable", f"SadTalker checkpoints incomplete in {d}: missing {'; '.join(missing)}")
    if found.safetensors is not None:
        groups = load_sadtalker_safetensors(found.safetensors)
        groups["mapping"] = load_mapping_checkpoint(found.mapping)
        sources = {name: f"{found.safetensors} [{name}.*]" for name in SAFETENSORS_PREFIXES}
    else:
        groups = load_old_checkpoints(d, preprocess)
        sources = {"audio2exp": f"{found.audio2exp} [model]", "audio2pose": f"{found.audio2pose} [model]",
                   "kp_extractor": f"{found.facevid2vid} [kp_detector]", "generator": f"{found.facevid2vid} [generator]",
                   "face_3drecon": f"{found.net_recon} [net_recon]"}
    sources["mapping"] = f"{found.mapping} [mapping]"
    nets = {name: _load(name, preprocess, groups.pop(name), source) for name, source in sources.items()}
    del groups
    return SadTalkerNets(
        audio2exp=nets["audio2exp"],
        audio2pose=nets["audio2pose"],
        kp_extractor=nets["kp_extractor"],
        generator=nets["generator"],
        mapping=nets["mapping"],
        reconnet=nets["face_3drecon"],
        size=size,
        preprocess=preprocess,
        checkpoints=found,
    )
