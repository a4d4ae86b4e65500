"""`sadtalker`: OpenTalker/SadTalker's audio -> 3DMM coefficients -> face-vid2vid renderer, on one portrait.

Per clip (in `prepare`): MediaPipe landmarks -> five points -> square face crop at the model size (both
`crop` and `full`; `full` adds the crop geometry to the 73-input MappingNet, as upstream) -> ReconNet 3DMM coefficients of the source -> Audio2Exp/Audio2Pose driving
coefficients at 25 fps, resampled to the output rate -> canonical keypoints, source keypoints and the
source feature volume. Per batch of frames (lazily, in the frame iterator): MappingNet -> driving
keypoints -> generator -> paste into the portrait. Memory stays flat whatever the clip length.

Checkpoints: `SADTALKER_CKPT_DIR` or `MODEL_ROOT/sadtalker` (see `checkpoints.py` for the two release
layouts). Modules that import torch (the networks, `glue`, `framing`) are imported inside the functions
that run them, so a worker without SadTalker checkpoints never loads torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ...errors import AvatarError
from ...face.blend import SquarePaster, extract_square, square_box
from ...face.locate import locate_face
from ...face.points import five_points
from ...runtime.cache import ModelCache
from ...runtime.checkpoints import find_checkpoint_dir
from ...runtime.device import GIB, batch_for_free_memory, gpu_total_bytes, torch_device, use_threads
from ...runtime.loading import load_strict
from ...runtime.precision import inference_autocast
from ...settings import Settings
from ..base import Engine, EngineStatus, LipStage, PreparedRender, RenderJob, choose_lip_stage
from . import checkpoints as ck

if TYPE_CHECKING:
    import torch

    from .checkpoints import SadTalkerNets

PREPROCESS_MODES = ("crop", "full")


def checkpoint_dir(settings: Settings) -> Path:
    """SADTALKER_CKPT_DIR when set, else MODEL_ROOT/sadtalker (the runtime's checkpoint policy for a folder)."""
    return find_checkpoint_dir(settings.sadtalker_ckpt_dir, "SADTALKER_CKPT_DIR", settings.model_root,
                               "sadtalker").candidates[0]


def _layout_files() -> dict[str, str]:
    files = {f"safetensors_{s}": ck.safetensors_name(s) for s in ck.SIZES}
    files.update(mapping_crop=ck.mapping_name("crop"), mapping_full=ck.mapping_name("full"))
    files.update(ck.OLD_FILES)
    return files


def found_files(ckpt_dir: Path) -> dict[str, str]:
    """Every known SadTalker checkpoint file present in `ckpt_dir`, by role."""
    return {role: str(ckpt_dir / name) for role, name in _layout_files().items() if (ckpt_dir / name).is_file()}


def render_sizes(ckpt_dir: Path, preprocess: str = "crop") -> list[int]:
    """Model sizes with a complete checkpoint set for `preprocess`. The old layout has one 256 px renderer
    (upstream would run it at 512 too, which it was not trained for), so it only offers 256."""
    sizes = []
    for size in ck.SIZES:
        found = ck.find_sadtalker_checkpoints(ckpt_dir, size, preprocess)
        if found is not None and (found.layout == "safetensors" or size == 256):
            sizes.append(size)
    return sizes


def choose_size(sizes: list[int], quality_mode: str) -> int:
    """256 px unless high quality was asked for and the 512 model is there (4x the generator cost)."""
    if not sizes:
        raise ValueError("no render size available")
    if quality_mode == "high_quality" and 512 in sizes:
        return 512
    return 256 if 256 in sizes else sizes[0]


def _missing_reason(ckpt_dir: Path, preprocess: str) -> str:
    missing = []
    if not (ckpt_dir / ck.mapping_name(preprocess)).is_file():
        missing.append(ck.mapping_name(preprocess))
    if not any((ckpt_dir / ck.safetensors_name(s)).is_file() for s in ck.SIZES):
        old = [n for n in ck.OLD_FILES.values() if not (ckpt_dir / n).is_file()]
        if old:
            missing.append(f"{ck.safetensors_name(256)} or {ck.safetensors_name(512)} (or the old files: "
                           f"{', '.join(old)})")
    where = "" if ckpt_dir.is_dir() else " (the folder does not exist)"
    return (f"SadTalker checkpoints incomplete in {ckpt_dir}{where}: missing {'; '.join(missing)} "
            "(set SADTALKER_CKPT_DIR or MODEL_ROOT)")


class _NetCache:
    """Networks loaded once per process (the runtime's `ModelCache`), by (folder, size, MappingNet file,
    device). Sets that differ only in the MappingNet (crop vs full) share every other network, so a
    second mode costs one 40 MB file."""

    def __init__(self):
        self._cache: ModelCache = ModelCache(max_entries=4)

    def get(self, ckpt_dir: Path, size: int, preprocess: str) -> tuple[SadTalkerNets, torch.device]:
        device = torch_device()
        key = (str(Path(ckpt_dir).resolve()), size, ck.mapping_name(preprocess), device.type)

        def load() -> SadTalkerNets:
            sibling = self._cache.find(lambda k: k[:2] == key[:2] and k[3] == key[3])
            if sibling is not None:
                return self._with_mapping(sibling, ckpt_dir, size, preprocess, device)
            return self._load(ckpt_dir, size, preprocess, device)

        return self._cache.get(key, load), device

    @staticmethod
    def _load(ckpt_dir: Path, size: int, preprocess: str, device) -> SadTalkerNets:
        nets = ck.load_sadtalker_nets(ckpt_dir, size, preprocess)
        # Audio2Exp/Audio2Pose stay on the CPU: they are small and `audio_to_coeffs` feeds them CPU tensors.
        for name in ("kp_extractor", "generator", "mapping", "reconnet"):
            getattr(nets, name).to(device)
        return nets

    @staticmethod
    def _with_mapping(sibling: SadTalkerNets, ckpt_dir: Path, size: int, preprocess: str, device) -> SadTalkerNets:
        from .nets.mapping import MappingNet

        found = ck.find_sadtalker_checkpoints(ckpt_dir, size, preprocess)
        if found is None:
            raise AvatarError("engine_unavailable", _missing_reason(Path(ckpt_dir), preprocess))
        mapping = MappingNet(coeff_nc=ck.mapping_coeff_nc(preprocess), descriptor_nc=1024, layer=3, num_kp=15,
                             num_bins=66)
        load_strict(mapping, ck.load_mapping_checkpoint(found.mapping), f"{found.mapping} [mapping]")
        mapping.eval().requires_grad_(False)
        return dataclasses.replace(sibling, mapping=mapping.to(device), preprocess=preprocess, checkpoints=found)

    def clear(self) -> None:
        self._cache.clear()


NETS = _NetCache()


# Frames per generator forward on CPU. Measured on 2 cores with det weights: 8 frames ~6.5 s/frame and
# ~4.7 GB peak RSS, 1-2 frames ~5.6 s/frame and ~1.3 GB: batching does not pay on CPU.
CPU_BATCH = {256: 2, 512: 1}  # measured: larger CPU batches are no faster and cost GBs


def batch_size(device: torch.device, size: int) -> int:
    """Frames per generator forward: `CPU_BATCH` on CPU; on a GPU by free memory (a quarter at 512 px)."""
    if device.type != "cuda":
        return CPU_BATCH[size]
    per_256 = batch_for_free_memory(device, ((12, 32), (6, 16), (0, 8)), cpu=CPU_BATCH[size])
    return per_256 if size == 256 else max(1, per_256 // 4)


def _to_tensor(img_u8: np.ndarray, device) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(img_u8)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


class SadTalkerEngine(Engine):
    """SadTalker motion and faces; `lip_refine` hands the frames to a `LipStage` (MuseTalk or Wav2Lip, wired by
    the registry; `sadtalker.lips` names one, `auto` takes the first that can run here, see `choose_lip_stage`)."""

    name = "sadtalker"
    version = "1"

    def __init__(self, lips: Sequence[LipStage] = ()):
        self._lips = tuple(lips)

    def status(self, settings: Settings) -> EngineStatus:
        d = checkpoint_dir(settings)
        found = found_files(d)
        if not render_sizes(d, "crop"):
            return EngineStatus(False, _missing_reason(d, "crop"), found)
        return EngineStatus(True, checkpoints=found)

    def suits_auto(self, settings: Settings) -> bool:
        """Seconds per frame on a CPU: `auto` takes SadTalker only where a GPU makes it real-time-ish."""
        if settings.sadtalker_auto_min_gpu_gb <= 0:
            return True
        return gpu_total_bytes() >= settings.sadtalker_auto_min_gpu_gb * GIB

    def _lip_stage(self, settings: Settings, wanted: str) -> LipStage:
        lips = choose_lip_stage(self._lips, settings, wanted, "sadtalker")
        if lips is None:
            reasons = "; ".join(f"{x.name}: {x.status(settings).reason}" for x in self._lips if isinstance(x, Engine))
            raise AvatarError("engine_unavailable",
                              f"lip_refine: no lip stage can run here ({reasons or 'none wired'})")
        return lips

    def warm_up(self, settings: Settings) -> None:
        d = checkpoint_dir(settings)
        sizes = render_sizes(d, "crop")
        if sizes:
            NETS.get(d, choose_size(sizes, "real_time"), "crop")

    def prepare(self, job: RenderJob) -> PreparedRender:
        import torch

        from .framing import driving_coeffs
        from .glue import keypoint_transformation, transform_semantic_1
        from .preprocess import coeffs_from_image

        req = job.request
        opts = req.sadtalker
        preprocess = opts.preprocess
        if preprocess not in PREPROCESS_MODES:
            raise AvatarError("invalid_input", f"preprocess must be one of {PREPROCESS_MODES}, got {preprocess!r}")
        d = checkpoint_dir(job.settings)
        sizes = render_sizes(d, preprocess)
        if not sizes:
            raise AvatarError("engine_unavailable", _missing_reason(d, preprocess))
        size = choose_size(sizes, req.quality_mode)
        lips = self._lip_stage(job.settings, opts.lips) if opts.lip_refine else None  # fails before any work

        image = job.image
        h, w = image.shape[:2]
        points, face_box = locate_face(image, job.source_scale)  # no_face before any model is loaded
        lm5 = five_points(points)

        nets, device = NETS.get(d, size, preprocess)
        use_threads(job.settings, device)
        # both modes animate a face crop pasted back with a feathered mask; `full` (upstream's name for
        # "keep the whole picture") also feeds the crop geometry to the 73-input MappingNet
        box = square_box(lm5, (h, w))
        source = extract_square(image, box, size)
        scale = size / box.side
        lm_src = (lm5 - np.array([box.x0, box.y0], np.float32) + 0.5) * scale - 0.5
        place = SquarePaster(image, box).paste

        ref = coeffs_from_image(nets.reconnet, source, lm_src)  # (1, 73): exp, angle, trans, crop params
        coeffs = driving_coeffs(job.audio.analysis, ref[0, :70], nets.audio2exp, nets.audio2pose, fps=job.fps,
                                n_frames=job.n_frames, pose_style=opts.pose_style, seed=req.seed, still=req.still,
                                expression_scale=opts.expression_scale)
        n_sem = nets.mapping.first[0].in_channels  # 70, or 73 for `full` (+ the source's crop params)
        if n_sem > 70:
            coeffs = np.concatenate([coeffs, np.repeat(ref[:, 70:n_sem], len(coeffs), axis=0)], axis=1)

        with torch.inference_mode():
            src = _to_tensor(source, device)
            kp_canonical = nets.kp_extractor(src)
            he_source = nets.mapping(torch.from_numpy(transform_semantic_1(ref[:, :n_sem]))[None].float().to(device))
            kp_source = keypoint_transformation(kp_canonical, he_source)
            feature = nets.generator.encode_source(src)

        bs = job.cap_batch(batch_size(device, size))
        frames = _frames(nets, device, coeffs, kp_canonical, kp_source, feature, place, bs, job)
        if lips is not None:
            frames = lips.refine(frames, job)
        info = {"face_box": face_box, "size": size, "preprocess": preprocess, "device": str(device),
                "batch_size": bs, "crop_box": box.as_list(), **({"lip_refine": lips.name} if lips else {})}
        return PreparedRender(frames=frames, info=info)


def render_batch(nets: SadTalkerNets, device, coeffs: np.ndarray, start: int, stop: int, kp_canonical, kp_source,
                 feature, cpu_bf16: bool = False) -> np.ndarray:
    """Faces (stop - start, S, S, 3) uint8 for frames start..stop-1 of the driving `coeffs` sequence."""
    import torch

    from .framing import mapping_windows
    from .glue import keypoint_transformation

    n = stop - start
    with torch.inference_mode():
        he = nets.mapping(torch.from_numpy(mapping_windows(coeffs, start, stop)).to(device))
        kp_driving = keypoint_transformation(kp_canonical.expand(n, -1, -1), he)
        with inference_autocast(device, cpu_bf16=cpu_bf16):
            pred = nets.generator.animate(feature.expand(n, -1, -1, -1, -1), kp_driving,
                                          kp_source.expand(n, -1, -1))["prediction"]
        faces = (pred.float().clamp_(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return faces.cpu().numpy()


def _frames(nets, device, coeffs, kp_canonical, kp_source, feature, place, bs: int, job: RenderJob
            ) -> Iterator[np.ndarray]:
    """Portrait frames, one generator batch at a time (grad mode is thread-local: each batch enters its own
    inference mode, since the pipeline pulls frames from a prefetch thread)."""
    n = len(coeffs)
    for start in range(0, n, bs):
        job.deadline.check(f"render, after {start} of {n} frames")  # timeout, or a cancel
        faces = render_batch(nets, device, coeffs, start, min(start + bs, n), kp_canonical, kp_source, feature,
                             job.settings.cpu_bf16)
        for face in faces:
            yield place(face)
