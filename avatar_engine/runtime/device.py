"""The device a neural engine runs on: the one GPU probe (CUDA visible, free and total memory, a report
for health), the free-memory -> batch-size ladder, and the CPU thread policy.

Engines, health and the job handlers ask here instead of probing torch themselves. Callers that must
stay cheap on a CPU worker pass `import_torch=False`: torch is then consulted only when a neural engine
already imported it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch

    from ..settings import Settings

GIB = 1024 ** 3


def torch_loaded() -> bool:
    """Whether a neural engine imported torch already (if not, this is a CPU worker so far)."""
    return "torch" in sys.modules


def _torch(import_torch: bool):
    if import_torch:
        import torch

        return torch
    return sys.modules.get("torch")


def cuda_visible(*, import_torch: bool = True) -> bool:
    """Whether a CUDA GPU is usable here (a broken driver counts as none)."""
    torch = _torch(import_torch)
    try:
        return torch is not None and bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no usable driver is no GPU
        return False


def torch_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    import torch

    return torch.device("cuda" if cuda_visible() else "cpu")


def gpu_free_bytes(device=None, *, import_torch: bool = True) -> int:
    """Free memory on the CUDA device (0 on the CPU or when CUDA is unavailable)."""
    if not cuda_visible(import_torch=import_torch):
        return 0
    torch = _torch(import_torch)
    if device is not None and torch.device(device).type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def gpu_total_bytes() -> int:
    """Total memory of the first CUDA device (0 without one)."""
    if not cuda_visible():
        return 0
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory)


def cuda_devices(*, import_torch: bool = True) -> list[dict[str, Any]]:
    """Every visible CUDA device: its name and total memory in GiB (none on a CPU)."""
    if not cuda_visible(import_torch=import_torch):
        return []
    cuda = _torch(import_torch).cuda
    return [{"name": cuda.get_device_name(i), "memory_gb": round(cuda.get_device_properties(i).total_memory / GIB, 1)}
            for i in range(cuda.device_count())]


def empty_gpu_cache() -> None:
    """Hand cached GPU blocks back after an out-of-memory (only a loaded neural engine can have any)."""
    if cuda_visible(import_torch=False):
        sys.modules["torch"].cuda.empty_cache()


def batch_for_free_memory(device, ladder: Sequence[tuple[float, int]], *, cpu: int) -> int:
    """Frames per forward: `cpu` on a CPU; on a GPU the batch of the first rung of `ladder`
    ((GiB free above which, batch), largest first) whose memory is free, else the last rung's batch."""
    if getattr(device, "type", str(device)) != "cuda":
        return cpu
    free = gpu_free_bytes(device)
    return next((batch for gib, batch in ladder if free > gib * GIB), ladder[-1][1])


def device_report() -> dict[str, Any]:
    """CUDA device name and memory, or the CPU; torch is asked only if it is installed."""
    if importlib.util.find_spec("torch") is None:
        return {"type": "cpu", "name": None, "torch": None}
    import torch

    out: dict[str, Any] = {"type": "cpu", "name": None, "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            out.update(type="cuda", name=torch.cuda.get_device_name(0), count=torch.cuda.device_count(),
                       gpu_free_gb=round(free / GIB, 2), gpu_total_gb=round(total / GIB, 2))
    except Exception as exc:  # noqa: BLE001 - a broken driver is something health must report, not raise
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def use_threads(settings: Settings, device) -> None:
    """TORCH_THREADS (0 = every core) for CPU inference; GPUs need no intra-op threads."""
    import torch

    if torch.device(device).type == "cpu":
        torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
