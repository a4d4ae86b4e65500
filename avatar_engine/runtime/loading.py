"""Reading official checkpoint files into state dicts and loading them strictly into the ports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import AvatarError


def _unavailable(path: Path, what: str) -> AvatarError:
    return AvatarError("engine_unavailable", f"checkpoint {path} {what}")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a `.pth`/`.pt`/`.tar` (torch, weights_only) or `.safetensors` file into a dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise _unavailable(path, "does not exist")
    size = path.stat().st_size
    if size == 0:
        raise _unavailable(path, "is empty (0 bytes): the download failed")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except AvatarError:
        raise
    except Exception as exc:  # truncated zip, pickle with code objects, wrong format...
        raise _unavailable(
            path, f"could not be read ({size} bytes; truncated or not a checkpoint?): {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise _unavailable(path, f"holds a {type(obj).__name__}, not a state dict")
    return obj


def extract_state_dict(obj: dict, *, prefer: Iterable[str] = ("state_dict",), strip: Iterable[str] = ("module.",)) -> dict:
    """Unwrap `{"state_dict": ...}`-style containers and drop DataParallel-style key prefixes."""
    for key in prefer:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        for p in strip:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_strict(module, state_dict: dict, path: str | os.PathLike) -> None:
    """`load_state_dict(strict=True)` with an `engine_unavailable` error listing the mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_shape = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if bad_shape:
            parts.append(f"{len(bad_shape)} shape mismatches (e.g. {bad_shape[:2]})")
        raise _unavailable(Path(path), "does not match the network: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)
