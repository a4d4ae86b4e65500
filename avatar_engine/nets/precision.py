"""Inference precision per device: fp16 on CUDA, bf16 on CPUs with native bf16 (AMX / AVX512-BF16).

Measured on this project's 2-core Xeon with AMX: Wav2Lip 3.7x, the SadTalker generator 2.1x and
GFPGAN 1.5x faster than float32. CPUs without native bf16 would only get slower, so they stay fp32.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def cpu_bf16_supported() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def inference_autocast(device: torch.device | str, *, cpu_bf16: bool = False):
    """The autocast context for running a float32 network on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if cpu_bf16 and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
