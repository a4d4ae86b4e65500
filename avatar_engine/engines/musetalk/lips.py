"""The MuseTalk lip stage over a stream of frames: crop, one UNet step per batch of frames, paste back.

Per frame (RGB in, RGB out; the networks' side is BGR as upstream's cv2 path): the face box from the
frame's face-mesh points (`geometry.mesh_crop_box`), the 256 px Lanczos crop, [masked | reference] latents of
that crop (the frame's own face is the reference, as upstream's inference uses the video frame itself), the
frame's whisper window, one UNet step, decode, and the paste through the jaw mask drawn from the mesh.
The posterior noise is drawn per frame from one generator seeded by the request's seed, so the output does
not depend on the batch size. At most one batch of frames is held in memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ...runtime.precision import inference_autocast
from . import audio, geometry, latents
from .layout import MuseTalkNets

Framed = tuple[np.ndarray, np.ndarray]  # (RGB frame, its (468+, 2+) face-mesh points)


@dataclass
class MuseTalkPainter:
    """Batched MuseTalk inference over a frame stream."""

    nets: MuseTalkNets
    batch_size: int = 8
    seed: int = 0
    bbox_shift: int = 0
    extra_margin: int = geometry.EXTRA_MARGIN
    blur_ratio: float = 0.05  # upstream's get_image (offline inference); its real-time path uses 0.1
    cpu_bf16: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def windows(self, audio_16k: np.ndarray, fps: float, n_frames: int) -> torch.Tensor:
        """[n_frames, 50, 384] whisper windows of the whole clip (frames past the audio get silence); never under
        bf16 autocast: the 8 M-parameter encoder is cheap and the feature extractor's STFT needs float32."""
        return audio.speech_windows(audio_16k, self.nets.whisper, self.nets.extractor, fps, n_frames)

    def run(self, framed: Iterable[Framed], audio_16k: np.ndarray, fps: float, n_frames: int,
            check: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
        """Yield lip-synced copies of the first `n_frames` frames of `framed` (RGB uint8), in order."""
        windows = self.windows(audio_16k, fps, n_frames)
        generator = torch.Generator(device="cpu").manual_seed(int(self.seed))
        batch: list[Framed] = []
        start = 0
        for index, pair in enumerate(islice(framed, n_frames)):
            batch.append(pair)
            if len(batch) == self.batch_size or index == n_frames - 1:
                if check is not None:
                    check(f"musetalk, frames {start}-{start + len(batch)} of {n_frames}")
                yield from self.paint(batch, windows[start:start + len(batch)], generator)
                start += len(batch)
                batch = []
        if batch:
            yield from self.paint(batch, windows[start:start + len(batch)], generator)

    def _precision(self):
        device = self.nets.device
        if device.type == "cpu":
            return inference_autocast(device, cpu_bf16=self.cpu_bf16)
        return contextlib.nullcontext()  # CUDA: the networks themselves are fp16

    def paint(self, batch: list[Framed], windows: torch.Tensor,
              generator: torch.Generator) -> list[np.ndarray]:
        """One batch: crops -> latents -> UNet -> faces, pasted into copies of the frames."""
        bgr = [np.ascontiguousarray(frame[:, :, ::-1]) for frame, _ in batch]
        boxes = [geometry.mesh_crop_box(points, frame.shape[:2], bbox_shift=self.bbox_shift,
                                        extra_margin=self.extra_margin) for frame, points in batch]
        crops = np.stack([geometry.crop_face(image, box) for image, box in zip(bgr, boxes)])
        noise = torch.randn((len(batch), 2, 4, 32, 32), generator=generator)
        with torch.inference_mode(), self._precision():
            latent_batch = latents.unet_input(self.nets.vae, crops, noise)
            predicted = latents.predict_latents(self.nets.unet, latent_batch, windows)
            faces = latents.decode(self.nets.vae, predicted)
        out = []
        for image, (_, points), box, face in zip(bgr, batch, boxes, faces):
            crop, _ = geometry.expanded_box(box)
            mask = geometry.jaw_mask(geometry.oval_mask(points, crop), box, crop, blur_ratio=self.blur_ratio)
            pasted = geometry.paste_face(image, geometry.face_to_box(face, box), box, crop, mask)
            out.append(np.ascontiguousarray(pasted[:, :, ::-1]))
        return out
