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
from ...netkit import load_strict, read_checkpoint
from ...settings import Settings
from .config import Diff2LipConfig

if TYPE_CHECKING:  # torch loads only when the network is built: finding the file must stay cheap
    from .nets import TFGModel

PREFERRED_NAMES = ("e7.24.1.3_model260000_paper.pt", "checkpoint.pt")
LICENSE = "CC BY-NC 4.0 (non-commercial)"


def find_diff2lip_checkpoint(settings: Settings) -> Path | None:
    """`DIFF2LIP_CKPT` if set (even when missing: loading then names it), else `MODEL_ROOT/diff2lip/`'s
    released file, `checkpoint.pt`, or its only `*.pt`; None when there is nothing to try."""
    if settings.diff2lip_ckpt is not None:
        return Path(settings.diff2lip_ckpt)
    folder = Path(settings.model_root) / "diff2lip"
    for name in PREFERRED_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.glob("*.pt") if p.is_file()) if folder.is_dir() else []
    return candidates[0] if len(candidates) == 1 else None


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
