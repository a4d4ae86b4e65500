"""The device a neural engine runs on: CUDA when visible, free GPU memory, the CPU thread policy."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..settings import Settings

GIB = 1024 ** 3


def torch_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_free_bytes(device=None) -> int:
    """Free memory on the CUDA device (0 on the CPU or when CUDA is unavailable)."""
    import torch

    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def use_threads(settings: Settings, device) -> None:
    """TORCH_THREADS (0 = every core) for CPU inference; GPUs need no intra-op threads."""
    import torch

    if torch.device(device).type == "cpu":
        torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
