"""`wav2lip`: the parametric engine's head motion and blinks, with the lips painted by Wav2Lip.

The parametric rig renders every frame with the lips at rest; the Wav2Lip lip stage then
re-paints the lower face of each frame from the speech. Frames stream end to end, so memory does
not grow with the clip length. torch is imported only when this engine runs, so a worker without
a Wav2Lip checkpoint never pays for it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ...errors import AvatarError
from ...settings import Settings
from ..base import Engine, EngineStatus, PreparedRender, RenderJob

if TYPE_CHECKING:
    import torch

    from ..parametric.engine import Motion
    from .nets import Wav2Lip

# Searched in this order under MODEL_ROOT/wav2lip: the GAN-trained weights give sharper mouths.
CHECKPOINT_NAMES = ("wav2lip_gan.pth", "wav2lip.pth")
# A face_box override smaller than this cannot hold a mouth the 96 px network can paint.
MIN_BOX_PX = 16
_GIB = 1024 ** 3


def checkpoint_paths(settings: Settings) -> list[Path]:
    """Where the checkpoint may be, best first. An explicit WAV2LIP_CKPT is the only candidate:
    a wrong explicit path should be reported, not silently replaced by another file."""
    if settings.wav2lip_ckpt is not None:
        return [Path(settings.wav2lip_ckpt)]
    return [Path(settings.model_root) / "wav2lip" / name for name in CHECKPOINT_NAMES]


def find_checkpoint(settings: Settings) -> Path | None:
    return next((p for p in checkpoint_paths(settings) if p.is_file()), None)


class _ModelCache:
    """One loaded model per process, reloaded only when the checkpoint file changes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._model: Wav2Lip | None = None
        self._device: torch.device | None = None

    def get(self, path: Path) -> tuple[Wav2Lip, torch.device]:
        try:
            resolved = path.resolve()
            key = (str(resolved), resolved.stat().st_mtime_ns)
        except OSError:
            raise AvatarError("engine_unavailable", f"checkpoint {path} does not exist") from None
        with self._lock:
            if self._key != key:
                import torch

                from .nets import load_wav2lip

                device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
                self._key, self._model = None, None  # free the old weights before loading new ones
                self._model = load_wav2lip(resolved).to(device)
                self._key, self._device = key, device
            return self._model, self._device


_MODELS = _ModelCache()


def _batch_size(device: torch.device) -> int:
    """16 frames per forward on CPU (more only adds latency); on a GPU, as many as free memory allows."""
    if device.type != "cuda":
        return 16
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return 128 if free > 8 * _GIB else 64 if free > 4 * _GIB else 32


def _use_threads(settings: Settings, device: torch.device) -> None:
    if device.type == "cpu":
        import torch

        torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)


def motion_boxes(motion: Motion, image_hw: tuple[int, int]) -> np.ndarray:
    """(n_frames, 4) Wav2Lip boxes (top, bottom, left, right), one per frame of `motion`.

    The lip stage wants every box up front, so they come from where the rig places the landmarks
    (microseconds per frame) instead of from rendered frames.
    """
    from .lips import face_box_from_landmarks

    boxes = np.empty((motion.n_frames, 4), dtype=np.int64)
    for i in range(motion.n_frames):
        boxes[i] = face_box_from_landmarks(motion.rig.landmarks_at(*motion.coeffs_pose(i)), image_hw)
    return boxes


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


def refine_lips(frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
    """Wav2Lip lips over another engine's frames (SadTalker's `lip_refine`), tracking the face per frame.

    The checkpoint is loaded here, before any frame, so a missing file fails the job up front.
    """
    from ...face.landmarks import FaceTracker
    from .lips import Wav2LipLipSync, face_box_from_landmarks

    path = find_checkpoint(job.settings)
    if path is None:
        expected = " or ".join(str(p) for p in checkpoint_paths(job.settings))
        raise AvatarError("engine_unavailable", f"lip_refine needs the Wav2Lip checkpoint ({expected})")
    model, device = _MODELS.get(path)
    _use_threads(job.settings, device)
    tracker, last = FaceTracker(), {}

    def box_for(index: int, frame: np.ndarray):
        points = tracker.update(frame)
        if points is not None:
            last["box"] = face_box_from_landmarks(points[:, :2], frame.shape[:2])
        if "box" not in last:
            raise AvatarError("no_face", f"lip_refine found no face in frame {index}")
        return last["box"]

    stage = Wav2LipLipSync(model, device, batch_size=_batch_size(device), cpu_bf16=job.settings.cpu_bf16)
    return stage.run(frames, box_for, job.audio.analysis, job.fps, n_frames=job.n_frames)


class Wav2LipEngine(Engine):
    name = "wav2lip"
    version = "1"

    def status(self, settings: Settings) -> EngineStatus:
        from .. import ENGINES  # the registry imports this module, so it is looked up at call time

        base = ENGINES["parametric"].status(settings)
        if not base.available:
            return EngineStatus(False, f"needs the parametric engine for head motion: {base.reason}")
        path = find_checkpoint(settings)
        if path is None:
            expected = " or ".join(str(p) for p in checkpoint_paths(settings))
            return EngineStatus(False, f"Wav2Lip checkpoint not found (expected {expected}; set WAV2LIP_CKPT "
                                       "or MODEL_ROOT)")
        return EngineStatus(True, checkpoints={"wav2lip": str(path)})

    def warm_up(self, settings: Settings) -> None:
        path = find_checkpoint(settings)
        if path is not None:
            _MODELS.get(path)

    def prepare(self, job: RenderJob) -> PreparedRender:
        from .. import ENGINES
        from .lips import Wav2LipLipSync

        path = find_checkpoint(job.settings)
        if path is None:
            raise AvatarError("engine_unavailable", self.status(job.settings).reason)
        image_hw = job.image.shape[:2]
        override = job.request.face_box
        fixed_box = checked_face_box(override, image_hw) if override is not None else None
        model, device = _MODELS.get(path)
        motion = ENGINES["parametric"].motion(job, animate_mouth=False)
        boxes = fixed_box if fixed_box is not None else motion_boxes(motion, image_hw)
        _use_threads(job.settings, device)
        stage = Wav2LipLipSync(model, device, batch_size=_batch_size(device), cpu_bf16=job.settings.cpu_bf16)
        frames = stage.run((frame for frame, _ in motion.frames()), boxes, job.audio.analysis, job.fps,
                           n_frames=job.n_frames)
        first_box = fixed_box if fixed_box is not None else boxes[0]
        info = {**motion.info, "lip_box": [int(v) for v in first_box], "lip_model": path.name,
                "device": str(device)}
        return PreparedRender(frames=frames, info=info)
