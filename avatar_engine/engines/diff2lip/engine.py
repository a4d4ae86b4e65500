"""`diff2lip`: Diff2Lip lips (diffusion inpainting of the lower face) over another engine's frames.

Alone (`engine: "diff2lip"`) it paints the embedded engine's head motion and blinks, as `wav2lip` does,
the boxes placed from the motion plan's landmarks; as a `LipStage` (`refine`) it repaints another engine's
frames (FOMM's in the high-quality chain), tracking the face per frame. The reference frame is the
portrait's own face crop (upstream's `sampling_ref_type=gt` gives the person's real face; ours is the
source before any motion). Frames go through the sampler in windows (16 on a CPU; on a GPU by free memory,
halved by `job.cap_batch` after a CUDA out-of-memory), each window one batch through every DDIM step, with
the request's `diff2lip.steps` (default 25, upstream's ddim25) and `seed` (upstream's default 7 is only the
building block's default: the request's seed wins).

Speed: a GPU engine. fp16 on CUDA as upstream converts it, optionally `torch.compile`d (DIFF2LIP_COMPILE).
On a CPU each UNet forward costs about a second per frame (2 idle cores, more on a busy machine), so 25 steps
take tens of seconds to minutes per frame: `auto` never picks it without a GPU (here or as FOMM's `auto` lip
stage), and an explicit CPU request renders with a warning.

Checkpoint: DIFF2LIP_CKPT or MODEL_ROOT/diff2lip/<file>.pt (see `checkpoints`); source: the Google Drive
folder linked from the soumik-kanad/diff2lip README. License: CC BY-NC 4.0, non-commercial use only.
torch is imported only when this engine runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ...face.blend import face_box_from_landmarks, motion_boxes
from ...face.locate import locate_face
from ...runtime.device import batch_for_free_memory, torch_device, use_threads
from ...runtime.inventory import license_block
from ...settings import Settings
from ..base import Engine, EngineStatus, LipStage, MotionSource, PreparedRender, RenderJob
from .checkpoints import LICENSE, cached_diff2lip, lookup

if TYPE_CHECKING:
    import torch

    from .lips import Diff2LipPainter

# Frames per sampler batch on a CPU: a step costs ~0.5-0.7 s a frame on 2 cores (det weights, fp32), so
# larger windows only add latency before the first frame.
CPU_WINDOW = 16
CPU_WARNING = ("diff2lip ran on a CPU, where each of its {steps} sampling steps runs the 100 M-parameter UNet over "
               "every frame (tens of seconds to minutes per frame at 25 steps); it is a GPU engine")


def window_size(device: torch.device) -> int:
    """Frames per sampler batch: `CPU_WINDOW` on a CPU; on a GPU by free memory (estimate: ~0.15 GB a frame
    in fp16 at 128 px; upstream batches 32 x 5 = 160 frames)."""
    return batch_for_free_memory(device, ((24, 160), (10, 64), (5, 32), (0, 16)), cpu=CPU_WINDOW)


class Diff2LipEngine(Engine, LipStage):
    """Lips by Diff2Lip on the head motion of a `MotionSource` (the parametric engine, wired by the registry),
    or on any engine's frames as a lip stage."""

    name = "diff2lip"
    version = "1"

    def __init__(self, motion: MotionSource):
        self._motion = motion

    def status(self, settings: Settings) -> EngineStatus:
        if blocked := license_block(self.name, settings):
            return EngineStatus(False, blocked)
        if isinstance(self._motion, Engine) and not (base := self._motion.status(settings)).available:
            return EngineStatus(False, f"needs the {self._motion.name} engine for head motion: {base.reason}")
        found = lookup(settings)
        if not found.found:
            return EngineStatus(False, found.missing_reason(f"Diff2Lip checkpoint ({LICENSE})"))
        return EngineStatus(True, checkpoints={"diff2lip": str(found.path)})

    def suits_auto(self, settings: Settings) -> bool:
        """Tens of seconds to minutes per frame on a CPU: `auto` may take Diff2Lip only on a CUDA GPU."""
        return torch_device().type == "cuda"

    def warm_up(self, settings: Settings) -> None:
        """Loads the model on a GPU only: on a CPU only an explicit request uses it, so 400 MB stay free."""
        found = lookup(settings)
        if found.found and self.suits_auto(settings):
            cached_diff2lip(found.path, torch_device(), compile=settings.diff2lip_compile)

    def _painter(self, job: RenderJob, what: str) -> tuple[Diff2LipPainter, Path]:
        from .lips import Diff2LipPainter

        path = lookup(job.settings).require(what)
        device = torch_device()
        model = cached_diff2lip(path, device, compile=job.settings.diff2lip_compile)
        use_threads(job.settings, device)
        painter = Diff2LipPainter(model, device, steps=job.request.diff2lip.steps, seed=job.request.seed,
                                  window=job.cap_batch(window_size(device)),
                                  cpu_bf16=job.settings.cpu_bf16)
        return painter, path

    @staticmethod
    def _portrait_box(job: RenderJob) -> tuple[int, int, int, int]:
        """The portrait's face box (its crop is the reference frame); `no_face` before any model is loaded."""
        points, _ = locate_face(job.image, job.source_scale)
        return face_box_from_landmarks(points[:, :2], job.image.shape[:2])

    def prepare(self, job: RenderJob) -> PreparedRender:
        from .lips import crop_face

        portrait_box = self._portrait_box(job)
        painter, path = self._painter(job, "Diff2Lip checkpoint")
        reference = crop_face(job.image, portrait_box, painter.config.image_size)
        motion = self._motion.motion(job, animate_mouth=False)
        boxes = motion_boxes(motion, job.image.shape[:2])
        frames = painter.run((frame for frame, _ in motion.frames()), lambda i, frame: tuple(boxes[i]), reference,
                             job.audio.analysis, job.fps, job.n_frames, check=job.deadline.check)
        info = {**motion.info, "lip_box": [int(v) for v in boxes[0]], "lip_model": path.name,
                "device": str(painter.device), "steps": painter.steps, "batch_size": painter.window}
        if painter.device.type != "cuda":
            info["warnings"] = [CPU_WARNING.format(steps=painter.steps)]
        return PreparedRender(frames=frames, info=info)

    def refine(self, frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
        """Diff2Lip lips over another engine's frames, the face tracked per frame.

        The checkpoint is loaded and the portrait's face found here, before any frame, so a missing file
        fails the job up front. A frame where the tracker finds no face keeps the last box (at first the
        portrait's own: the motion engines move the head by a few pixels).
        """
        from ...face.landmarks import FaceTracker
        from .lips import crop_face

        portrait_box = self._portrait_box(job)
        painter, _ = self._painter(job, "Diff2Lip lips need the Diff2Lip checkpoint")
        reference = crop_face(job.image, portrait_box, painter.config.image_size)
        tracker, last = FaceTracker(), {"box": portrait_box}

        def box_for(index: int, frame: np.ndarray):
            points = tracker.update(frame)
            if points is not None:
                last["box"] = face_box_from_landmarks(points[:, :2], frame.shape[:2])
            return last["box"]

        return painter.run(frames, box_for, reference, job.audio.analysis, job.fps, job.n_frames,
                           check=job.deadline.check)

