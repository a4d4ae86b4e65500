"""The Wav2Lip lip stage: re-paints the mouth of any frame sequence to match a speech track.

Works on a stream (a generator of frames) and keeps at most one batch of frames in memory.
Preprocessing follows upstream `inference.py` (BGR, bottom pad, INTER_LINEAR to 96 px, lower half
blanked, the frame itself as reference). The paste-back differs on purpose: upstream overwrites the
whole face box, which leaves a visible blurry rectangle; here only the lower face is blended in
through a feathered mask, after a light colour match, so pixels outside the box never change.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

from ...audio.frames import frame_count_for_samples
from ...audio.mel import MEL_WINDOW, SAMPLE_RATE, melspectrogram, pad_to_window
from ...face.blend import FaceBox, paste_lower_face
from ...runtime.precision import inference_autocast
from .nets import FACE_SIZE, Wav2Lip, mel_chunk_starts

UPSTREAM_PADS = (0, 10, 0, 0)  # top, bottom, left, right: upstream extends the box to include the chin


class Wav2LipLipSync:
    """Batched Wav2Lip inference over a stream of RGB frames with per-frame (or fixed) face boxes."""

    def __init__(
        self,
        model: Wav2Lip,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        pads: Sequence[int] = UPSTREAM_PADS,
        cpu_bf16: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.batch_size = int(batch_size)
        self.pads = tuple(int(p) for p in pads)
        self.cpu_bf16 = cpu_bf16

    def run(
        self,
        frames: Iterable[np.ndarray],
        boxes: Sequence[FaceBox] | FaceBox | Callable[[int, np.ndarray], FaceBox],
        audio_16k: np.ndarray,
        fps: float,
        n_frames: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield lip-synced copies of `frames` (RGB uint8, HxWx3), in order, one per input frame.

        `boxes` is one (y1, y2, x1, x2) for all frames, one per frame, or a callable `(index, frame)`
        returning it (detector-style, before padding). Frame i gets the mel window starting at int(i * 80/fps), clamped to the last one.
        Stops after `n_frames` (default: ceil(audio duration * fps)) or when `frames` runs out, so
        an endless generator of a still portrait is fine. Input frames are never modified.
        """
        audio = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise ValueError("audio_16k is empty")
        if n_frames is None:
            n_frames = frame_count_for_samples(audio.size, fps, SAMPLE_RATE)
        mel = pad_to_window(melspectrogram(audio))  # under 0.2 s: padded with silence
        starts = mel_chunk_starts(mel.shape[1], fps, n_frames)
        box_for = _box_lookup(boxes)

        batch: list[tuple[np.ndarray, FaceBox]] = []
        batch_starts: list[int] = []
        for index, frame in enumerate(islice(frames, n_frames)):
            frame = _check_frame(frame, index)
            batch.append((frame, self._padded_box(box_for(index, frame), frame.shape)))
            batch_starts.append(starts[index])
            if len(batch) == self.batch_size:
                yield from self._render(batch, mel, batch_starts)
                batch, batch_starts = [], []
        if batch:
            yield from self._render(batch, mel, batch_starts)

    def _padded_box(self, box: FaceBox, shape: tuple[int, ...]) -> FaceBox:
        top, bottom, left, right = self.pads
        y1, y2, x1, x2 = (int(v) for v in box)
        y1, y2 = max(0, y1 - top), min(shape[0], y2 + bottom)
        x1, x2 = max(0, x1 - left), min(shape[1], x2 + right)
        if y2 - y1 < 2 or x2 - x1 < 2:
            raise ValueError(f"face box {box} is empty inside a {shape[1]}x{shape[0]} frame")
        return y1, y2, x1, x2

    def _render(self, batch: list[tuple[np.ndarray, FaceBox]], mel: np.ndarray, starts: list[int]) -> list[np.ndarray]:
        faces_bgr = np.stack(
            [
                cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
                for frame, (y1, y2, x1, x2) in batch
            ]
        )
        masked = faces_bgr.copy()
        masked[:, FACE_SIZE // 2 :] = 0
        # NHWC memory viewed as NCHW is exactly channels_last, so no copy happens here.
        face_input = torch.from_numpy(np.concatenate([masked, faces_bgr], axis=3)).permute(0, 3, 1, 2)
        face_input = face_input.to(self.device, torch.float32) / 255.0
        mel_input = torch.from_numpy(np.stack([mel[:, s : s + MEL_WINDOW] for s in starts])[:, None]).to(self.device)

        with torch.inference_mode(), inference_autocast(self.device, cpu_bf16=self.cpu_bf16):
            predicted = self.model(mel_input, face_input.contiguous(memory_format=torch.channels_last))
        # (B,3,96,96) BGR in [0,1] -> (B,96,96,3) RGB in [0,255]
        predicted_rgb = (predicted.float() * 255.0).permute(0, 2, 3, 1).flip(3).cpu().numpy()

        return [paste_lower_face(frame, box, face) for (frame, box), face in zip(batch, predicted_rgb)]



def _check_frame(frame: np.ndarray, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index}: expected RGB uint8 HxWx3, got {frame.dtype} {frame.shape}")
    return frame


def _box_lookup(boxes: Sequence[FaceBox] | FaceBox | Callable[[int, np.ndarray], FaceBox]):
    """Accept one box for every frame, a per-frame sequence (list, tuple or (N, 4) array), or a
    callable `(index, frame) -> box` for faces only known once the frame exists (tracking)."""
    if callable(boxes):
        return lambda index, frame: tuple(int(v) for v in boxes(index, frame))
    arr = np.asarray(boxes)
    if arr.shape == (4,):
        fixed = tuple(int(v) for v in arr)
        return lambda index, frame: fixed
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be one (y1, y2, x1, x2) or a sequence of them, got shape {arr.shape}")

    def per_frame(index: int, frame: np.ndarray) -> FaceBox:
        if index >= len(arr):
            raise ValueError(f"no face box for frame {index}: only {len(arr)} boxes were given")
        return tuple(int(v) for v in arr[index])

    return per_frame
