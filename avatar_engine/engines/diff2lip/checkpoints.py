"""Finding and strictly loading Diff2Lip's released checkpoint.

Source: the Google Drive folder linked from github.com/soumik-kanad/diff2lip's README; users know the file
as `e7.24.1.3_model260000_paper.pt` (upstream's scripts call it `checkpoints/checkpoint.pt`). It is a
flat state_dict `{key: tensor}` with exactly `TFGModel`'s 632 keys (no wrapper, no `module.` prefix), as
upstream loads it with `load_state_dict(torch.load(path), strict=True)`.
License: CC BY-NC 4.0 — non-commercial use only, for the code and the weights.

Mount it as `MODEL_ROOT/diff2lip/<file>.pt`, or point `DIFF2LIP_CKPT` at it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import AvatarError
from ...runtime.cache import ModelCache, file_key
from ...runtime.checkpoints import CheckpointLookup, find_checkpoint
from ...runtime.inventory import checkpoint_names
from ...runtime.loading import load_strict, read_checkpoint
from ...settings import Settings
from .config import Diff2LipConfig

if TYPE_CHECKING:  # torch loads only when the network is built: finding the file must stay cheap
    from .nets import TFGModel

PREFERRED_NAMES = checkpoint_names("diff2lip")  # the released file, then checkpoint.pt (runtime/models.json)
LICENSE = "CC BY-NC 4.0 (non-commercial)"


def lookup(settings: Settings) -> CheckpointLookup:
    """The runtime's checkpoint policy (`DIFF2LIP_CKPT` alone when set, a wrong one is reported), else
    `MODEL_ROOT/diff2lip/`'s released file, then `checkpoint.pt`, then the folder's only `*.pt`: users rename
    the file they got from the Drive folder, and one unambiguous candidate is safe to take."""
    found = find_checkpoint(settings.diff2lip_ckpt, "DIFF2LIP_CKPT", settings.model_root, "diff2lip",
                            PREFERRED_NAMES)
    if found.found or found.explicit:
        return found
    folder = Path(settings.model_root) / "diff2lip"
    others = sorted(p for p in folder.glob("*.pt") if p.is_file()) if folder.is_dir() else []
    if len(others) == 1 and os.access(others[0], os.R_OK):
        return CheckpointLookup(found.env, found.candidates + (others[0],), False, others[0])
    return found


def load_diff2lip(path: str | os.PathLike, config: Diff2LipConfig | None = None) -> "TFGModel":
    """Build `TFGModel` from the flat state_dict at `path` (weights_only, strict; eval, CPU, float32).

    A missing, empty, truncated, non-dict or mismatching file raises AvatarError("engine_unavailable")
    naming the file and what is wrong. Call `.to(device)` and, on CUDA, `.convert_to_fp16()` after.
    """
    from .nets import TFGModel

    state_dict = read_checkpoint(path)
    bad = [k for k, v in state_dict.items() if not hasattr(v, "shape")]
    if bad:
        raise AvatarError("engine_unavailable",
                          f"checkpoint {path} is not a flat state_dict: {bad[:3]} hold no tensors")
    model = TFGModel(config)
    load_strict(model, state_dict, path)
    return model.eval()


# One loaded model per (file version, device type, compiled or not): a replaced file and its successor.
_MODELS: ModelCache = ModelCache(max_entries=2)


def cached_diff2lip(path: str | os.PathLike, device=None, *, compile: bool = False) -> "TFGModel":
    """`load_diff2lip` once per process, on `device` (default: the CPU): fp16 on CUDA as upstream converts
    it (`convert_to_fp16`: convolutions in half, linear layers and norms in float32), and on CUDA with
    `compile` wrapped in `torch.compile` (DIFF2LIP_COMPILE; never on the CPU, where it only costs start-up)."""
    import torch

    device = torch.device("cpu") if device is None else torch.device(device)
    compiled = bool(compile) and device.type == "cuda"

    def load():
        model = load_diff2lip(path).to(device)
        if device.type == "cuda":
            model = model.convert_to_fp16()
        return torch.compile(model) if compiled else model

    return _MODELS.get((file_key(Path(path)), device.type, compiled), load)

