"""`enhance: true`: GFPGAN face restoration over any engine's frames, loaded once per process.

Faces are tracked frame to frame (5 points from the dense landmarks) and restored with GFPGAN's
fixed noise buffers, so a still face restores identically in every frame: no flicker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ...runtime.cache import ModelCache, file_key
from ...runtime.checkpoints import CheckpointLookup, find_checkpoint
from ...runtime.device import torch_device
from ...settings import Settings

CHECKPOINT_NAMES = ("GFPGANv1.4.pth", "GFPGANv1.3.pth")
_MODELS: ModelCache = ModelCache(max_entries=2)


def lookup(settings: Settings) -> CheckpointLookup:
    """GFPGAN_CKPT, else MODEL_ROOT/gfpgan/GFPGANv1.4.pth, else .../GFPGANv1.3.pth."""
    return find_checkpoint(settings.gfpgan_ckpt, "GFPGAN_CKPT", settings.model_root, "gfpgan", CHECKPOINT_NAMES)


def gfpgan_checkpoint(settings: Settings) -> Path | None:
    """The GFPGAN file to use, or None when none is usable."""
    return lookup(settings).path


def load_restorer_model(settings: Settings):
    """The GFPGAN network for these settings; `engine_unavailable` when there is no usable file."""
    from .nets import load_gfpgan

    path = lookup(settings).require("enhance needs the GFPGAN checkpoint (or send enhance: false)")
    device = torch_device()
    return _MODELS.get((file_key(path), device.type), lambda: load_gfpgan(path, device=device))


def enhance_frames(frames: Iterable[np.ndarray], model, weight: float, *, cpu_bf16: bool = False
                   ) -> Iterator[np.ndarray]:
    """Restore the face in each frame; frames where no face is tracked pass through unchanged."""
    from ...face.landmarks import FaceTracker
    from ...face.points import five_points
    from .face import FaceRestorer

    restorer = FaceRestorer(model, device=next(model.parameters()).device, weight=weight, cpu_bf16=cpu_bf16)
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
