"""Shared network helpers for every engine's ports: strict checkpoint loading, precision, det-weights.

Kept free of module-level torch imports so that importing it costs nothing for the embedded engine.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import AvatarError

# --- reading official checkpoints ---------------------------------------------------------------


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


# --- precision ----------------------------------------------------------------------------------
# Measured on this project's 2-core Xeon with AMX: Wav2Lip 3.7x, the SadTalker generator 2.1x and
# GFPGAN 1.5x faster in bf16 than float32. CPUs without native bf16 would only get slower: fp32 there.


@lru_cache(maxsize=1)
def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively (AMX / AVX512-BF16)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def inference_autocast(device, *, cpu_bf16: bool = False):
    """The autocast context for running a float32 network on `device`: fp16 on CUDA, bf16 on native CPUs."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if cpu_bf16 and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- deterministic weights (the fixture rule) -----------------------------------------------------
# Prove a port without trained checkpoints; used by tests and by scripts/bench.py.


def det_fill(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The value the fixtures' reference network held for state_dict entry `name`."""
    shape = tuple(int(s) for s in shape)
    k = zlib.crc32(name.encode("utf-8")) % 997
    n = int(np.prod(shape)) if len(shape) else 1
    i = np.arange(n, dtype=np.float64)
    base = np.sin(i * 0.7853981633974483 + (k + 1) * 1.234567) * np.cos(i * 0.0123 + k * 0.5)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, dtype=np.int64)
    if leaf == "running_var":
        out = 1.0 + 0.5 * np.abs(base)
    elif leaf == "running_mean":
        out = 0.1 * base
    elif len(shape) >= 2:
        out = base / np.sqrt(float(np.prod(shape[1:])))
    elif leaf == "weight":
        out = 1.0 + 0.1 * base
    else:
        out = 0.1 * base
    return out.reshape(shape).astype(np.float32)


def det_state_dict(module) -> dict:
    """A state_dict for `module` filled by `det_fill`, same keys, shapes and dtypes."""
    import torch

    out = {}
    for key, tensor in module.state_dict().items():
        arr = det_fill(key, tuple(tensor.shape))
        out[key] = torch.from_numpy(arr).to(tensor.dtype)
    return out


def fill_module(module, overrides: dict | None = None):
    """Load det-filled weights (plus `overrides`, e.g. spectral-norm u/v) strictly; returns module."""
    sd = det_state_dict(module)
    if overrides:
        import torch

        for k, v in overrides.items():
            sd[k] = torch.as_tensor(v).to(sd[k].dtype)
    module.load_state_dict(sd, strict=True)
    return module.eval()
