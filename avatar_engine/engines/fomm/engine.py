"""`fomm`: First Order Motion Model (vox-256) head motion on the portrait, then a lip stage.

Per clip (in `prepare`): the portrait's face -> a square 256 px crop (`face.blend.square_box`, the
upstream SadTalker/FOMM alignment geometry) -> source keypoints and the source encoding, computed once.
Driving keypoints come from one of two places:

* a reference video (`reference_video_url | reference_video_b64`, same fetch guards as the other inputs,
  byte cap MAX_VIDEO_BYTES): decoded onto the output fps, cropped at 256 px around the face found in its
  first frame (one fixed window, so the head's motion stays in the frames), keypoints per frame, motion
  taken relative to the first driving frame (`fomm.relative`, `fomm.adapt_scale`: upstream's
  `--relative --adapt_scale`). A video shorter than the audio plays forth and back (ping-pong: frame
  L-1 is followed by L-2, never by 0, so the motion never jumps); a longer one is cut at the audio's end.
* the audio alone: the motion source's head track (the embedded engine's seeded sway and speech nods:
  roll, translation in face heights, relative scale per frame) applied to the source keypoints' values
  and Jacobians (`motion.pose_keypoints`) about the head centre, so the generator turns the head as one
  body. Blinks and lips are left to the later stages.

Per batch of frames (lazily, in the frame iterator): the generator renders 256 px faces (fp16 autocast on
CUDA, bf16 on CPUs that have it) and `SquarePaster` blends each into the full-resolution portrait.
How no seam shows: the blend mask is an ellipse inscribed in the square whose feather (0.80 -> 0.96 of the
half side) lies wholly inside the crop, so the crop's border and corners keep the portrait's own pixels;
the crop is about four eye distances wide, so it reaches well below the chin and the jaw line sits in
the mask's solid core, while the feather crosses the neck and shoulders, where the re-posed output and
the portrait differ least (head poses are small). Then the first available lip stage repaints the mouth
(`lips`, wired by the registry in order of preference: Diff2Lip on a GPU, Wav2Lip when its checkpoint is
mounted, else the embedded engine's mouth repaint; the request's `fomm.lips` can name one instead).

Checkpoint: FOMM_CKPT or MODEL_ROOT/fomm/vox-cpk.pth.tar (vox-adv-cpk.pth.tar also accepted); source:
the Google Drive / Yandex Disk links in the AliaksandrSiarohin/first-order-model README. License: code MIT
(since 2023-06; CC BY-NC 4.0 before); the weights carry no separate terms (trained on VoxCeleb, whose
videos come from YouTube under their own terms). torch is imported only when this engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ...errors import AvatarError
from ...face.blend import Box, SquarePaster, extract_square, square_box
from ...face.locate import locate_face
from ...face.points import five_points
from ...face.regions import CHIN, FOREHEAD, face_frame
from ...runtime.device import batch_for_free_memory, cuda_visible, torch_device, use_threads
from ...settings import Settings
from ..base import (
    Engine,
    EngineStatus,
    LipStage,
    MotionSource,
    PreparedRender,
    RenderJob,
    checkpoint_status,
    choose_lip_stage,
)
from .checkpoints import CHECKPOINT_NAMES, cached_fomm_nets, lookup

if TYPE_CHECKING:
    import torch

    from .checkpoints import FommNets
    from .driving import DrivingClip
    from .nets import Keypoints

FACE_SIZE = 256
LICENSE = ("code MIT (AliaksandrSiarohin/first-order-model, since 2023-06); weights: no separate terms "
           "stated, trained on VoxCeleb")
# Frames per generator forward on CPU: measured on 2 cores with det weights, 4 frames cost ~2.3 s/frame,
# 1 frame ~6 s (the per-forward overhead of the dense-motion hourglass amortises).
CPU_BATCH = 4


def batch_size(device: torch.device) -> int:
    """Frames per forward: `CPU_BATCH` on CPU; on a GPU by free memory (~0.3 GB a frame in fp16)."""
    return batch_for_free_memory(device, ((12, 32), (6, 16), (0, 8)), cpu=CPU_BATCH)


def to_normalized(points_px: np.ndarray, box: Box, size: int = FACE_SIZE) -> np.ndarray:
    """Portrait pixel coordinates (x, y) -> FOMM's [-1, 1] crop coordinates (the grid's ends are the centres
    of the crop's corner pixels, as in `nets.coordinate_grid`)."""
    p = np.asarray(points_px, dtype=np.float64)
    crop_px = (p - np.array([box.x0, box.y0], dtype=np.float64) + 0.5) * (size / box.side) - 0.5
    return 2.0 * crop_px / (size - 1) - 1.0


@dataclass(frozen=True)
class HeadPose:
    """A head track in FOMM's crop coordinates, per frame."""

    roll_deg: np.ndarray  # (N,) positive = clockwise on screen
    translation: np.ndarray  # (N, 2) normalised crop units
    scale: np.ndarray  # (N,) 1 = unchanged
    center: np.ndarray  # (2,) the point the head turns about, normalised crop units


def head_pose_from_track(head, points: np.ndarray, box: Box, size: int = FACE_SIZE) -> HeadPose:
    """The embedded engine's `HeadTrack` (roll in degrees; tx, ty in face heights along the face's own
    right/down axes; scale relative around 0) in the crop coordinates of `box`, turning about the same
    head centre the embedded rig uses (midway forehead-chin, raised by 8 % of the face height)."""
    _, right, down, face_h = face_frame(points)
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    center_px = (xy[FOREHEAD] + xy[CHIN]) / 2 - 0.08 * face_h * down
    per_px = 2.0 * size / (box.side * (size - 1))  # normalised units per portrait pixel
    tx, ty = np.asarray(head.tx, np.float64), np.asarray(head.ty, np.float64)
    shift_px = face_h * (tx[:, None] * right[None, :] + ty[:, None] * down[None, :])
    return HeadPose(roll_deg=np.asarray(head.roll_deg, np.float64), translation=shift_px * per_px,
                    scale=1.0 + np.asarray(head.scale, np.float64), center=to_normalized(center_px, box, size))


def pose_driving_keypoints(kp_source: Keypoints, pose: HeadPose) -> Keypoints:
    """Driving keypoints for every frame of `pose`: the source keypoints moved rigidly (values and Jacobians)."""
    from .motion import pose_keypoints

    n = len(pose.roll_deg)
    rotation = np.zeros((n, 3))
    rotation[:, 2] = pose.roll_deg
    return pose_keypoints(kp_source, rotation_deg=rotation, translation=pose.translation, scale=pose.scale,
                          center=pose.center)


def _to_tensor(frames_u8: np.ndarray, device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1] on `device`."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames_u8)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def detect_keypoints(nets: FommNets, frames_u8: np.ndarray, device, batch: int) -> Keypoints:
    """Keypoints of (N, 256, 256, 3) frames, in batches, float32 (they are inverted as 2x2 matrices
    downstream, so the detector never runs in reduced precision)."""
    import torch

    values, jacobians = [], []
    with torch.inference_mode():
        for start in range(0, len(frames_u8), batch):
            kp = nets.kp_detector(_to_tensor(frames_u8[start:start + batch], device))
            values.append(kp["value"].float())
            jacobians.append(kp["jacobian"].float())
    return {"value": torch.cat(values), "jacobian": torch.cat(jacobians)}


def _reference_face_box(frame: np.ndarray) -> Box:
    """The square crop window (left, top, right, bottom) around the face in a driving frame."""
    try:
        points, _ = locate_face(frame)
    except AvatarError as exc:
        if exc.code == "no_face":
            raise AvatarError("no_face", "no face was found in the first frame of the reference video; send a "
                                         "video that shows one face from its first frame on") from None
        raise AvatarError(exc.code, f"reference video: {exc.message}") from None
    return square_box(five_points(points), frame.shape[:2])


def load_reference_video(job: RenderJob) -> DrivingClip:
    """The request's reference video fetched (guards and MAX_VIDEO_BYTES) and decoded onto the output
    timeline as 256 px face crops, at most `job.n_frames` of them."""
    from ...media.fetch import load_input
    from .driving import DrivingLimits, decode_driving_video

    req, settings = job.request, job.settings
    data = job.reference_video
    if data is None:  # a job built outside the pipeline (which fetches it in its fetch step)
        data = load_input(req.reference_video_url, req.reference_video_b64, kind="video", settings=settings).data
    return decode_driving_video(data, job.fps, size=FACE_SIZE, box_fn=_reference_face_box,
                                limits=DrivingLimits.from_settings(settings),
                                stop_after=job.n_frames)


class FommEngine(Engine):
    """FOMM head motion (from a reference video or a `MotionSource`'s head track), lips by the first
    available `LipStage` (both wired by the registry)."""

    name = "fomm"
    version = "1"

    def __init__(self, motion: MotionSource, lips: Sequence[LipStage] = ()):
        self._motion = motion
        self._lips = tuple(lips)

    def status(self, settings: Settings) -> EngineStatus:
        return checkpoint_status(settings, lookup(settings), "FOMM checkpoint", "fomm", depends_on=self._motion,
                                 purpose="face tracking")

    def suits_auto(self, settings: Settings) -> bool:
        """~1-2 s a frame on a CPU: `auto` may take FOMM only on a CUDA GPU."""
        return cuda_visible()

    def warm_up(self, settings: Settings) -> None:
        found = lookup(settings)
        if found.found:
            cached_fomm_nets(found.path, torch_device())

    def lip_stage(self, settings: Settings, wanted: str = "auto") -> LipStage | None:
        """`wanted` ("auto": the first lip stage that can run here and suits `auto` on this machine, so Diff2Lip
        only on a GPU; an engine's status decides, other stages always can), or the named one, which must be
        wired and able to run (else `engine_unavailable`; a named stage runs even where auto would skip it)."""
        return choose_lip_stage(self._lips, settings, wanted, "fomm")

    def prepare(self, job: RenderJob) -> PreparedRender:
        import torch

        from .driving import pingpong_indices
        from .motion import normalize_kp

        path = lookup(job.settings).require("FOMM checkpoint")
        image = job.image
        points, face_box = locate_face(image, job.source_scale)  # no_face before any model is loaded
        box = square_box(five_points(points), image.shape[:2])
        source = extract_square(image, box, FACE_SIZE)

        req = job.request
        lips = self.lip_stage(job.settings, req.fomm.lips)  # a missing named lip stage fails before any work
        driven = job.reference_video is not None or req.reference_video_url or req.reference_video_b64
        clip = load_reference_video(job) if driven else None  # the CLI's file arrives as job.reference_video

        device = torch_device()
        nets = cached_fomm_nets(path, device)
        use_threads(job.settings, device)
        bs = batch_size(device)
        info = {"face_box": face_box, "crop_box": box.as_list(), "fomm_model": path.name, "device": str(device),
                "batch_size": bs}
        with torch.inference_mode():
            kp_source = detect_keypoints(nets, source[None], device, 1)
            encoding = nets.generator.encode_source(_to_tensor(source[None], device))
        if clip is not None:
            kp_clip = detect_keypoints(nets, clip.unique, device, bs)  # once per distinct source frame
            timeline = clip.index[pingpong_indices(len(clip), job.n_frames)]
            index = torch.from_numpy(timeline).to(kp_clip["value"].device)
            with torch.inference_mode():
                kp_driving = normalize_kp(kp_source, {k: v[index] for k, v in kp_clip.items()},
                                          {k: v[clip.index[:1]] for k, v in kp_clip.items()},
                                          adapt_movement_scale=req.fomm.adapt_scale,
                                          use_relative_movement=req.fomm.relative,
                                          use_relative_jacobian=req.fomm.relative)
            info.update(driving="video", reference_frames=len(clip), reference_box=list(clip.box),
                        reference_loop="pingpong" if len(clip) < job.n_frames else None)
            del clip
        else:
            head = self._motion.motion(job, animate_mouth=False).head
            with torch.inference_mode():
                kp_driving = pose_driving_keypoints(kp_source, head_pose_from_track(head, points, box))
            info.update(driving="audio")

        paster = SquarePaster(image, box)
        frames = _frames(nets, device, encoding, kp_source, kp_driving, paster, bs, job)
        if lips is not None:
            frames = lips.refine(frames, job)
        info["lip_stage"] = getattr(lips, "name", type(lips).__name__) if lips is not None else None
        return PreparedRender(frames=frames, info=info)


def render_batch(nets: FommNets, device, encoding, kp_source: Keypoints, kp_driving: Keypoints,
                 cpu_bf16: bool = False) -> np.ndarray:
    """Faces (N, 256, 256, 3) uint8 for a batch of N driving keypoints, from the once-encoded source."""
    import torch

    from ...runtime.precision import inference_autocast

    with torch.inference_mode():
        with inference_autocast(device, cpu_bf16=cpu_bf16):
            pred = nets.generator.animate(encoding, kp_driving, kp_source, previews=False)["prediction"]
        faces = (pred.float().clamp_(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return faces.cpu().numpy()


def _frames(nets, device, encoding, kp_source, kp_driving, paster: SquarePaster, bs: int, job: RenderJob
            ) -> Iterator[np.ndarray]:
    """Portrait frames, one generator batch at a time (each batch enters its own inference mode: the
    pipeline pulls frames from a prefetch thread, and grad mode is thread-local)."""
    n = kp_driving["value"].shape[0]
    for start in range(0, n, bs):
        job.deadline.check(f"render, after {start} of {n} frames")  # timeout, or a cancel
        batch = {k: v[start:start + bs] for k, v in kp_driving.items()}
        for face in render_batch(nets, device, encoding, kp_source, batch, job.settings.cpu_bf16):
            yield paster.paste(face)


__all__ = ["CHECKPOINT_NAMES", "FommEngine", "LICENSE", "batch_size", "head_pose_from_track",
           "pose_driving_keypoints", "render_batch", "to_normalized"]
