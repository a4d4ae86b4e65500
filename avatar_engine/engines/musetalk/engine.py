"""`musetalk`: MuseTalk 1.5 lips (one UNet step of latent inpainting at 256 px) over another engine's frames.

Alone (`engine: "musetalk"`) it paints the embedded engine's head motion and blinks, as `wav2lip` does, the
crop placed from the motion plan's landmarks; as a `LipStage` (`refine`) it repaints another engine's frames
(SadTalker's, FOMM's), the face tracked per frame by the face mesh. Options: the request's `musetalk`
(`bbox_shift`, `extra_margin`) and `seed` (the posterior noise).

Speed: a GPU engine (fp16 on CUDA as upstream's real-time path; batch by free memory, halved by
`job.cap_batch` after a CUDA out-of-memory). On a CPU the 850 M-parameter UNet costs seconds per frame, so
`auto` picks it only on a GPU and an explicit CPU request renders with a warning.

Files: upstream's `models/` tree under MODEL_ROOT/musetalk or MUSETALK_DIR (see `layout`). Licenses: code
MIT, UNet weights CreativeML OpenRAIL-M (commercial use allowed, with use-based restrictions to pass on),
sd-vae-ft-mse MIT, whisper-tiny Apache-2.0 (weights) / MIT (code); upstream's non-commercial helper models
(S3FD, DWPose via mmpose, BiSeNet parsing) are replaced by the project's MediaPipe face mesh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ...errors import AvatarError
from ...runtime.device import batch_for_free_memory, torch_device, use_threads
from ...settings import Settings
from ..base import Engine, EngineStatus, LipStage, MotionSource, PreparedRender, RenderJob
from .layout import find_files

if TYPE_CHECKING:
    import torch

    from .lips import MuseTalkPainter

CPU_BATCH = 4
CPU_WARNING = ("musetalk ran on a CPU, where its 850 M-parameter UNet costs seconds per frame; it is a GPU engine "
               "(30+ fps on a V100 per upstream)")


def batch_size(device: "torch.device") -> int:
    """Frames per UNet batch: `CPU_BATCH` on a CPU; on a GPU by free memory (fp16 at 32x32 latents: ~60 MB a
    frame through the UNet and VAE; upstream's real-time script batches 20)."""
    return batch_for_free_memory(device, ((16, 64), (8, 32), (4, 16), (0, 8)), cpu=CPU_BATCH)


class MuseTalkEngine(Engine, LipStage):
    """Lips by MuseTalk on the head motion of a `MotionSource` (the parametric engine, wired by the registry),
    or on any engine's frames as a lip stage."""

    name = "musetalk"
    version = "1"

    def __init__(self, motion: MotionSource):
        self._motion = motion

    def status(self, settings: Settings) -> EngineStatus:
        if isinstance(self._motion, Engine) and not (base := self._motion.status(settings)).available:
            return EngineStatus(False, f"needs the {self._motion.name} engine for head motion: {base.reason}")
        files = find_files(settings)
        if files.missing():
            return EngineStatus(False, files.missing_reason())
        return EngineStatus(True, checkpoints={"musetalk": str(files.root)})

    def suits_auto(self, settings: Settings) -> bool:
        """Seconds per frame on a CPU: `auto` takes MuseTalk only on a CUDA GPU."""
        return torch_device().type == "cuda"

    def warm_up(self, settings: Settings) -> None:
        """Loads the networks on a GPU only: on a CPU only an explicit request uses them (3.4 GB stay free)."""
        from .layout import cached_nets

        files = find_files(settings)
        if not files.missing() and self.suits_auto(settings):
            cached_nets(files, torch_device())

    def _painter(self, job: RenderJob) -> "MuseTalkPainter":
        from .layout import cached_nets
        from .lips import MuseTalkPainter

        files = find_files(job.settings)
        if files.missing():
            raise AvatarError("engine_unavailable", files.missing_reason())
        device = torch_device()
        nets = cached_nets(files, device)
        use_threads(job.settings, device)
        opts = job.request.musetalk
        return MuseTalkPainter(nets, batch_size=job.cap_batch(batch_size(device)), seed=job.request.seed,
                               bbox_shift=opts.bbox_shift, extra_margin=opts.extra_margin,
                               cpu_bf16=job.settings.cpu_bf16)

    def _info(self, painter: "MuseTalkPainter") -> dict:
        info = {"lip_model": "musetalkV15", "device": str(painter.nets.device), "batch_size": painter.batch_size}
        if painter.nets.device.type != "cuda":
            info["warnings"] = [CPU_WARNING]
        return info

    def prepare(self, job: RenderJob) -> PreparedRender:
        painter = self._painter(job)
        motion = self._motion.motion(job, animate_mouth=False)
        frames = painter.run(motion.frames(), job.audio.analysis, job.fps, job.n_frames, check=job.deadline.check)
        info = {**motion.info, **self._info(painter)}
        if "warnings" in motion.info:
            info["warnings"] = [*motion.info["warnings"], *info.get("warnings", [])]
        return PreparedRender(frames=frames, info=info)

    def refine(self, frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]:
        """MuseTalk lips over another engine's frames, the face tracked per frame by the face mesh.

        The networks are loaded and the portrait's face found here, before any frame, so missing files or no
        face fail the job up front. A frame where the tracker finds no face keeps the last mesh (at first the
        portrait's own: the motion engines move the head by a few pixels)."""
        from ...face.landmarks import FaceTracker
        from ...face.locate import locate_face

        points, _ = locate_face(job.image, job.source_scale)
        painter = self._painter(job)
        tracker, last = FaceTracker(), {"points": points}

        def framed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for frame in frames:
                found = tracker.update(frame)
                if found is not None:
                    last["points"] = found
                yield frame, last["points"]

        return painter.run(framed(), job.audio.analysis, job.fps, job.n_frames, check=job.deadline.check)
