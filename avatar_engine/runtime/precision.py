"""Inference precision: fp16 autocast on CUDA, bf16 on CPUs that run it natively, else float32."""

from __future__ import annotations

import contextlib
from functools import lru_cache

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
