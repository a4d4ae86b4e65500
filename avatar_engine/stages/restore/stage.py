"""GFPGAN face restoration over any engine's frames, as a frame stage; the model loaded once per process.

It runs when the request says `enhance: true` (a missing checkpoint then fails the job), and is wanted
in high-quality mode and on plans that list it (the high-quality chain): without a usable checkpoint
those jobs render unrestored, saying so in `warnings` where a deployer should know. `enhance: false`
turns it off everywhere. Faces are tracked frame to frame (5 points from the dense landmarks) and
restored with GFPGAN's fixed noise buffers, so a still face restores identically in every frame: no flicker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    from ...engines.base import RenderJob

from ...errors import AvatarError
from ...runtime.cache import ModelCache, file_key
from ...runtime.checkpoints import CheckpointLookup, find_checkpoint
from ...runtime.device import torch_device
from ...runtime.inventory import checkpoint_names, load_inventory
from ...settings import Settings
from ..base import FrameStage, Need, StageStatus

CHECKPOINT_NAMES = checkpoint_names("gfpgan")  # GFPGANv1.4.pth, then GFPGANv1.3.pth (runtime/models.json)
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


class RestoreStage(FrameStage):
    """`gfpgan`: the face restored after the engine, before captions are drawn."""

    name = "gfpgan"
    license = load_inventory()["stages"]["gfpgan"]["license"]
    result_flag = "enhanced"

    def status(self, settings: Settings) -> StageStatus:
        found = lookup(settings)
        return StageStatus(found.found, "" if found.found else found.missing_reason("GFPGAN checkpoint"))

    def warm_up(self, settings: Settings) -> None:
        if gfpgan_checkpoint(settings):
            load_restorer_model(settings)

    def need(self, request, *, listed: bool) -> Need:
        if "enhance" in request.model_fields_set:  # the request's own word wins over mode and plan
            return Need.REQUIRED if request.enhance else Need.OFF
        return Need.WANTED if listed or request.quality_mode == "high_quality" else Need.OFF

    def load(self, job: RenderJob, need: Need, warnings: list[str]):
        if need is Need.REQUIRED:
            return load_restorer_model(job.settings)
        found = lookup(job.settings)
        if not found.found:
            if found.explicit:  # a bad GFPGAN_CKPT is a deployment mistake worth telling the caller
                warnings.append(f"face restoration skipped: {found.missing_reason('GFPGAN checkpoint')}")
            return None
        try:
            return load_restorer_model(job.settings)
        except AvatarError as exc:  # an optional stage failing is reported, never silently dropped
            warnings.append(f"face restoration skipped: {exc.message}")
            return None

    def apply(self, frames: Iterator[np.ndarray], job: RenderJob, loaded) -> Iterator[np.ndarray]:
        return enhance_frames(frames, loaded, job.request.enhance_weight, cpu_bf16=job.settings.cpu_bf16)
