"""Deterministic weights (the fixtures' rule): prove a port without trained checkpoints.

Used by tests and by scripts/bench.py.
"""

from __future__ import annotations

import zlib

import numpy as np


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
