"""The Diff2Lip lip stage over a stream of frames: crop, sample a window of frames as one batch, paste back.

Preprocessing as upstream `generate.py`: the face box (ours from landmarks, S3FD-shaped, upstream's
pads 0,0,0,0) resized to 128x128 with cv2 INTER_LINEAR, aspect ignored; the mel window per frame with
Diff2Lip's own offset, over the whole audio (`conditioning.mel_windows`). The paste-back differs on
purpose, as Wav2Lip's does: upstream resizes the 128 px face back and overwrites the whole box; here only
the lower face is blended in through the shared feathered mask after a light colour match, so pixels
above the mouth and outside the box never change. At most one window of frames is held in memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

from ...audio.mel import melspectrogram, pad_to_window
from ...face.blend import FaceBox, paste_lower_face
from ...runtime.precision import inference_autocast
from .conditioning import mel_windows, sample_window
from .nets import TFGModel
from .sampler import RespacedSchedule


def crop_face(frame: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """The box's pixels as a (size, size, 3) uint8 RGB crop, stretched as upstream (aspect ignored)."""
    y1, y2, x1, x2 = box
    return cv2.resize(np.ascontiguousarray(frame[y1:y2, x1:x2]), (size, size), interpolation=cv2.INTER_LINEAR)


def clip_mel_windows(audio_16k: np.ndarray, n_frames: int, fps: float, config) -> np.ndarray:
    """[n_frames, 80, 16] windows covering the whole audio (zero-padded STFT, as upstream on librosa >= 0.9);
    audio under one window is padded with silence (the normalised floor)."""
    mel = pad_to_window(melspectrogram(np.asarray(audio_16k, dtype=np.float32).reshape(-1), padding="zero"))
    return mel_windows(mel, n_frames, fps, config)


@dataclass
class Diff2LipPainter:
    """Batched Diff2Lip sampling over a frame stream; one `window` of frames goes through each DDIM step."""

    model: TFGModel
    device: torch.device
    steps: int = 25
    seed: int = 7
    window: int = 16
    cpu_bf16: bool = False  # bf16 autocast on CPUs that run it natively

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self.device = torch.device(self.device)
        self.config = self.model.config
        self.schedule = RespacedSchedule.create(self.steps, self.config)  # ValueError for impossible counts

    def run(self, frames: Iterable[np.ndarray], box_for: Callable[[int, np.ndarray], FaceBox], reference: np.ndarray,
            audio_16k: np.ndarray, fps: float, n_frames: int,
            check: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
        """Yield lip-synced copies of the first `n_frames` of `frames` (RGB uint8), in order.

        `box_for(index, frame)` gives each frame's face box; `reference` is the (128, 128, 3) reference crop
        (the portrait's face). `check(stage)` runs before a window and after each step (deadline, cancel).
        """
        mels = clip_mel_windows(audio_16k, n_frames, fps, self.config)
        batch: list[tuple[np.ndarray, FaceBox]] = []
        start = 0
        for index, frame in enumerate(islice(frames, n_frames)):
            batch.append((frame, box_for(index, frame)))
            if len(batch) == self.window:
                yield from self._window(batch, reference, mels[start:start + len(batch)], start, n_frames, check)
                start += len(batch)
                batch = []
        if batch:
            yield from self._window(batch, reference, mels[start:start + len(batch)], start, n_frames, check)

    def _window(self, batch: list[tuple[np.ndarray, FaceBox]], reference: np.ndarray, mels: np.ndarray, start: int,
                n_frames: int, check: Callable[[str], None] | None) -> list[np.ndarray]:
        size = self.config.image_size
        faces = np.stack([crop_face(frame, box, size) for frame, box in batch])

        def on_step(index: int) -> None:
            if check is not None:
                check(f"diff2lip, frames {start}-{start + len(batch)} of {n_frames}, after {self.steps - index} of "
                      f"{self.steps} steps")

        on_step(self.steps)
        # CUDA: the model itself is fp16 (upstream's convert_to_fp16), no autocast. CPUs with native bf16
        # (CPU_BF16): autocast, 1.6x faster on 2 idle cores (0.9 vs 1.5 s/frame at steps=2, batch 4).
        precision = (inference_autocast(self.device, cpu_bf16=self.cpu_bf16) if self.device.type == "cpu"
                     else contextlib.nullcontext())
        with torch.inference_mode(), precision:
            result = sample_window(self.model, faces, reference, mels, steps=self.steps, seed=self.seed,
                                   device=self.device, schedule=self.schedule, on_step=on_step)
        return [paste_lower_face(frame, box, face) for (frame, box), face in zip(batch, result.faces)]
