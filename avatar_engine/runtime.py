"""What every neural engine needs from the machine: the device, the thread policy, one model cache
and one checkpoint-lookup policy. torch is imported only inside the functions that need it.

Checkpoint policy, the same for every engine: an explicit path from the environment (e.g.
`WAV2LIP_CKPT`) is the only candidate when set — a wrong explicit path is reported, never silently
replaced by another file; otherwise the first existing file of `MODEL_ROOT/<engine>/<name>` in the
engine's order of preference.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generic, Hashable, Sequence, TypeVar

from .errors import AvatarError

if TYPE_CHECKING:
    import torch

    from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
GIB = 1024 ** 3


# --- device and threads -------------------------------------------------------------------------


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


# --- checkpoint lookup --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointLookup:
    """Where an engine's checkpoint was looked for, and what was found."""

    env: str  # the environment variable that overrides the search, e.g. "WAV2LIP_CKPT"
    candidates: tuple[Path, ...]
    explicit: bool
    path: Path | None = None  # the first candidate that is a readable file

    @property
    def found(self) -> bool:
        return self.path is not None

    def missing_reason(self, what: str) -> str:
        """One wording for every engine: what is missing, where it was looked for, how to fix it."""
        if self.explicit:
            return (f"{what}: {self.env}={self.candidates[0]} {_why_unusable(self.candidates[0])} "
                    f"(fix or unset {self.env})")
        expected = " or ".join(str(p) for p in self.candidates)
        return f"{what} not found (expected {expected}; set {self.env} or MODEL_ROOT)"

    def require(self, what: str) -> Path:
        if self.path is None:
            raise AvatarError("engine_unavailable", self.missing_reason(what))
        return self.path


def _why_unusable(path: Path) -> str:
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    return "is not readable"


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def find_checkpoint(explicit: Path | None, env: str, model_root: Path, engine: str,
                    names: Sequence[str]) -> CheckpointLookup:
    """The checkpoint policy above, for a single file."""
    if explicit is not None:
        path = Path(explicit)
        return CheckpointLookup(env, (path,), True, path if _readable(path) else None)
    candidates = tuple(Path(model_root) / engine / name for name in names)
    return CheckpointLookup(env, candidates, False, next((p for p in candidates if _readable(p)), None))


def find_checkpoint_dir(explicit: Path | None, env: str, model_root: Path, engine: str) -> CheckpointLookup:
    """The same policy for an engine whose checkpoints are a folder of files (SadTalker)."""
    folder = Path(explicit) if explicit is not None else Path(model_root) / engine
    return CheckpointLookup(env, (folder,), explicit is not None, folder if folder.is_dir() else None)


def report_bad_explicit_paths(settings: Settings) -> None:
    """Log once at worker start every explicit checkpoint setting that points nowhere."""
    for env, value in (("WAV2LIP_CKPT", settings.wav2lip_ckpt), ("GFPGAN_CKPT", settings.gfpgan_ckpt),
                       ("FOMM_CKPT", getattr(settings, "fomm_ckpt", None)),
                       ("DIFF2LIP_CKPT", getattr(settings, "diff2lip_ckpt", None))):
        if value is not None and not _readable(Path(value)):
            log.warning("%s=%s %s; the engines that need it are unavailable", env, value, _why_unusable(Path(value)))
    if settings.sadtalker_ckpt_dir is not None and not Path(settings.sadtalker_ckpt_dir).is_dir():
        log.warning("SADTALKER_CKPT_DIR=%s is not a folder; SadTalker is unavailable", settings.sadtalker_ckpt_dir)


# --- one model cache ----------------------------------------------------------------------------


def file_key(*paths: Path) -> tuple:
    """Identity of checkpoint files: resolved path and modification time, so a replaced file reloads."""
    out = []
    for path in paths:
        try:
            resolved = Path(path).resolve()
            out.append((str(resolved), resolved.stat().st_mtime_ns))
        except OSError:
            raise AvatarError("engine_unavailable", f"checkpoint {path} does not exist") from None
    return tuple(out)


@dataclass
class ModelCache(Generic[T]):
    """Loaded models per process, keyed by what they were loaded from (see `file_key`).

    `max_entries` bounds memory: the oldest entry is dropped first. Loading happens under the lock, so
    two jobs asking for the same model at once load it once.
    """

    max_entries: int = 4
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _items: dict[Hashable, T] = field(default_factory=dict, repr=False)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                return self._items[key]
            value = load()
            self._items[key] = value
            while len(self._items) > self.max_entries:
                self._items.pop(next(iter(self._items)))
            return value

    def find(self, match: Callable[[Hashable], bool]) -> T | None:
        """A cached value whose key satisfies `match` (e.g. a sibling that shares networks)."""
        with self._lock:
            return next((v for k, v in self._items.items() if match(k)), None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
