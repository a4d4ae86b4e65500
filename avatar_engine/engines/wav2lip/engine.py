"""`wav2lip`: the parametric engine's head motion and blinks, with the lips painted by Wav2Lip.

The parametric rig renders every frame with the lips at rest; the Wav2Lip lip stage then
re-paints the lower face of each frame from the speech. Frames stream end to end, so memory does
not grow with the clip length. torch is imported only when this engine runs, so a worker without
a Wav2Lip checkpoint never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ...errors import AvatarError
from ...face.blend import face_box_from_landmarks, motion_boxes
from ...runtime.cache import ModelCache, file_key
from ...runtime.checkpoints import CheckpointLookup, find_checkpoint
from ...runtime.device import batch_for_free_memory, torch_device, use_threads
from ...runtime.inventory import checkpoint_names, license_block
from ...settings import Settings
from ..base import (
    Engine,
    EngineStatus,
    LipStage,
    MotionSource,
    PreparedRender,
    RenderJob,
    checkpoint_status,
)

if TYPE_CHECKING:
    import torch

    from .nets import Wav2Lip

# Searched in this order under MODEL_ROOT/wav2lip (runtime/models.json order): the GAN-trained weights first
# (sharper mouths), the .pth training file before upstream's TorchScript file of today; then any other *.pt.
CHECKPOINT_NAMES = checkpoint_names("wav2lip")
# A face_box override smaller than this cannot hold a mouth the 96 px network can paint.
MIN_BOX_PX = 16
_MODELS: ModelCache = ModelCache(max_entries=2)


def lookup_names(model_root: Path) -> tuple[str, ...]:
    """CHECKPOINT_NAMES, then every other TorchScript-style `*.pt` in MODEL_ROOT/wav2lip (sorted)."""
    folder = Path(model_root) / "wav2lip"
    extra = sorted(p.name for p in folder.glob("*.pt") if p.name not in CHECKPOINT_NAMES) if folder.is_dir() else []
    return CHECKPOINT_NAMES + tuple(extra)


def lookup(settings: Settings) -> CheckpointLookup:
    """WAV2LIP_CKPT, else the first of `checkpoint_names` under MODEL_ROOT/wav2lip."""
    return find_checkpoint(settings.wav2lip_ckpt, "WAV2LIP_CKPT", settings.model_root, "wav2lip",
                           lookup_names(settings.model_root))


def load_model(path: Path) -> tuple[Wav2Lip, torch.device]:
    """The network on this machine's device, loaded once per process (again if the file changes)."""
    from .nets import load_wav2lip

    device = torch_device()
    return _MODELS.get((file_key(path), device.type), lambda: (load_wav2lip(path).to(device), device))


def loaded_form(path: Path) -> str | None:
    """How `path` was loaded in this process (state dict -> port, TorchScript ...), None before a load."""
    try:
        key = file_key(path)
    except AvatarError:
        return None
    model = _MODELS.find(lambda k: k[0] == key)
    return getattr(model[0], "checkpoint_form", None) if model is not None else None


def _batch_size(device: torch.device) -> int:
    """16 frames per forward on CPU (more only adds latency); on a GPU, as many as free memory allows."""
    return batch_for_free_memory(device, ((8, 128), (4, 64), (0, 32)), cpu=16)


def checked_face_box(face_box: tuple[int, int, int, int], image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The request's [top, bottom, left, right] override, if it lies inside the output image."""
    top, bottom, left, right = (int(v) for v in face_box)
    height, width = image_hw
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise AvatarError("invalid_input", f"face_box {list(face_box)} must satisfy 0 <= top < bottom <= {height} "
                                           f"and 0 <= left < right <= {width} (output pixels, size {width}x{height})")
    if bottom - top < MIN_BOX_PX or right - left < MIN_BOX_PX:
        raise AvatarError("invalid_input", f"face_box {list(face_box)} is smaller than {MIN_BOX_PX} px on a side")
    return top, bottom, left, right


class Wav2LipEngine(Engine, LipStage):
    """Lips by Wav2Lip on the head motion of a `MotionSource` (the parametric engine, wired by the registry)."""

    name = "wav2lip"
    version = "1"

    def __init__(self, motion: MotionSource):
        self._motion = motion

    def status(self, settings: Settings) -> EngineStatus:
        if blocked := license_block(self.name, settings):
            return EngineStatus(False, blocked)
        found = lookup(settings)
        status = checkpoint_status(settings, found, "Wav2Lip checkpoint", "wav2lip", depends_on=self._motion,
                                   purpose="head motion")
        if status.available and found.path is not None:
            form = loaded_form(found.path) or "not loaded yet"
            return EngineStatus(True, status.reason, status.checkpoints, forms={"wav2lip": form})
        return status

    def warm_up(self, settings: Settings) -> None:
        found = lookup(settings)
        if found.found:
            load_model(found.path)

    def _stage(self, job: RenderJob, what: str):
        from .lips import Wav2LipLipSync

        model, device = load_model(lookup(job.settings).require(what))
        use_threads(job.settings, device)
        bs = job.cap_batch(_batch_size(device))
        return Wav2LipLipSync(model, device, batch_size=bs, cpu_bf16=job.settings.cpu_bf16), device

    def prepare(self, job: RenderJob) -> PreparedRender:
        face_box = job.request.wav2lip.face_box
        image_hw = job.image.shape[:2]
        fixed_box = checked_face_box(face_box, image_hw) if face_box is not None else None
        stage, device = self._stage(job, "Wav2Lip checkpoint")
        motion = self._motion.motion(job, animate_mouth=False)
        boxes = fixed_box if fixed_box is not None else motion_boxes(motion, image_hw)
        frames = stage.run((frame for frame, _ in motion.frames()), boxes, job.audio.analysis, job.fps,
                           n_frames=job.n_frames)
        first_box = fixed_box if fixed_box is not None else boxes[0]
        info = {**motion.info, "lip_box": [int(v) for v in first_box], "lip_model": lookup(job.settings).path.name,
                "lip_form": getattr(stage.model, "checkpoint_form", None),
                "device": str(device)}
        return PreparedRender(frames=frames, info=info)

    def refine(self, frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
        """Wav2Lip lips over another engine's frames (SadTalker's `lip_refine`), tracking the face per frame.

        The checkpoint is loaded here, before any frame, so a missing file fails the job up front.
        """
        from ...face.landmarks import FaceTracker

        stage, _ = self._stage(job, "lip_refine needs the Wav2Lip checkpoint")
        tracker, last = FaceTracker(), {}

        def box_for(index: int, frame: np.ndarray):
            points = tracker.update(frame)
            if points is not None:
                last["box"] = face_box_from_landmarks(points[:, :2], frame.shape[:2])
            if "box" not in last:
                raise AvatarError("no_face", f"lip_refine found no face in frame {index}")
            return last["box"]

        return stage.run(frames, box_for, job.audio.analysis, job.fps, n_frames=job.n_frames)
