"""`enhance: true`: GFPGAN face restoration over any engine's frames, loaded once per process.

Faces are tracked frame to frame (5 points from the dense landmarks) and restored with GFPGAN's
fixed noise buffers, so a still face restores identically in every frame: no flicker.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import AvatarError
from ..settings import Settings

log = logging.getLogger(__name__)

_NAMES = ("GFPGANv1.4.pth", "GFPGANv1.3.pth")
_models: dict[tuple, object] = {}
_lock = threading.Lock()


def gfpgan_checkpoint(settings: Settings) -> Path | None:
    """GFPGAN_CKPT if set, else MODEL_ROOT/gfpgan/GFPGANv1.4.pth (or v1.3)."""
    if settings.gfpgan_ckpt:
        return Path(settings.gfpgan_ckpt)
    for name in _NAMES:
        path = Path(settings.model_root) / "gfpgan" / name
        if path.is_file():
            return path
    return None


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_restorer_model(settings: Settings):
    """The GFPGAN network for these settings; `engine_unavailable` when there is no usable file."""
    from .nets import load_gfpgan

    path = gfpgan_checkpoint(settings)
    if path is None:
        expected = Path(settings.model_root) / "gfpgan" / _NAMES[0]
        raise AvatarError("engine_unavailable", f"enhance needs the GFPGAN checkpoint: put GFPGANv1.4.pth at {expected} "
                                                "or set GFPGAN_CKPT (or send enhance: false)")
    stat = path.stat() if path.exists() else None
    key = (str(path.resolve()), stat.st_mtime_ns if stat else None)
    with _lock:
        if key not in _models:
            _models[key] = load_gfpgan(path, device=_device())
        return _models[key]


def enhance_frames(frames: Iterable[np.ndarray], model, weight: float, *, cpu_bf16: bool = False
                   ) -> Iterator[np.ndarray]:
    """Restore the face in each frame; frames where no face is tracked pass through unchanged."""
    from ..face.landmarks import FaceTracker
    from ..face.points import five_points
    from .face import FaceRestorer

    restorer = FaceRestorer(model, device=_device(), weight=weight, cpu_bf16=cpu_bf16)
    tracker = FaceTracker()
    previous, restored = None, None
    for frame in frames:
        if previous is not None and (frame is previous or np.array_equal(frame, previous)):
            yield restored  # a held frame restores exactly as before, and costs nothing
            continue
        points = tracker.update(frame)
        previous = frame
        restored = frame if points is None else restorer.restore(frame, five_points(points))
        yield restored
