"""What Diff2Lip's denoiser is conditioned on, and one window of frames sampled as a batch.

As upstream's `generate.py` / `tfg_data_util.py` (soumik-kanad/diff2lip @ 0655a45):
* faces: 128x128 RGB crops scaled to [-1, 1]; the rows from int(H * (1 - face_hide_percentage)) down
  are masked, and the masked part of the condition image is the *same* seed noise that is x_T (one
  [1,3,H,W] draw of torch's CPU generator, reused by every frame);
* a reference frame (the same crop in upstream's cross mode, or any other frame of the person);
* the mel window of 16 columns for frame k starting at int(80 * max(k + 1 - syncnet_T//2, 0) / fps) —
  Diff2Lip's own offset (Wav2Lip's inference uses int(80 * k / fps)).

Ours differs on purpose in one place: upstream stops at the first window that runs past the audio
(dropping the last frames); here the last windows are clamped to the end, so every frame of
`frame_count(duration, fps)` gets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ...audio.mel import MEL_FRAMES_PER_SECOND, MEL_WINDOW
from .config import Diff2LipConfig
from .nets import TFGModel
from .sampler import RespacedSchedule


def mel_window_starts(n_frames: int, fps: float, mel_frames: int,
                      config: Diff2LipConfig = Diff2LipConfig()) -> np.ndarray:
    """Start column of each video frame's 16-column mel window, clamped to the last full window."""
    if mel_frames < MEL_WINDOW:
        raise ValueError(f"need at least {MEL_WINDOW} mel frames (0.2 s of audio), got {mel_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    lead = config.syncnet_T // 2 - 1  # upstream's loop starts at i = 1: frames 0 and 1 share a window
    starts = [int(MEL_FRAMES_PER_SECOND * (max(k - lead, 0) / float(fps))) for k in range(n_frames)]
    return np.minimum(np.asarray(starts, dtype=np.int64), mel_frames - MEL_WINDOW)


def mel_windows(mel: np.ndarray, n_frames: int, fps: float, config: Diff2LipConfig = Diff2LipConfig()) -> np.ndarray:
    """[80, T] mel (`melspectrogram(wav, padding="zero")`) -> [n_frames, 80, 16] float32 windows."""
    starts = mel_window_starts(n_frames, fps, mel.shape[1], config)
    return np.stack([mel[:, s : s + MEL_WINDOW] for s in starts]).astype(np.float32)


def faces_to_model(faces_rgb: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] (or [H,W,3]) RGB crops -> float32 [N,3,H,W] in [-1, 1], as upstream scales them."""
    faces = np.asarray(faces_rgb)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[-1] != 3:
        raise ValueError(f"expected [N, H, W, 3] RGB faces, got shape {faces.shape}")
    scaled = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)
    return (scaled * 2 - 1).clamp(-1, 1)


def lower_face_mask(size: int, config: Diff2LipConfig = Diff2LipConfig()) -> torch.Tensor:
    """[1,1,size,size] float32: 1 on the hidden (generated) lower rows, 0 on the given upper ones."""
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, int(size * (1 - config.face_hide_percentage)) :, :] = 1.0
    return mask


def seed_noise(seed: int, size: int) -> torch.Tensor:
    """[1,3,size,size] float32 N(0,1): what `torch.manual_seed(seed); torch.randn(...)` gives, without
    touching the global generator."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((1, 3, size, size), generator=generator)


def condition_image(img: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The frame with its masked part replaced by the seed noise."""
    return img * (1.0 - mask) + mask * noise


@dataclass(frozen=True)
class WindowSample:
    """One sampled window: `faces` uint8 [N,H,W,3] RGB as upstream pastes them, `sample` the raw x_0."""

    faces: np.ndarray
    sample: torch.Tensor


def compose_faces(sample: torch.Tensor, img: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Generated lower part over the given upper part -> uint8 HWC, truncated (not rounded) as upstream."""
    recon = sample * mask + (1.0 - mask) * img
    recon = ((recon + 1) * 0.5).clamp(0, 1) * 255
    return recon.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)


def sample_window(model: TFGModel, frames_batch: np.ndarray, ref: np.ndarray, mels: np.ndarray, steps: int = 25,
                  seed: int = 7, device: str | torch.device = "cpu", *,
                  schedule: RespacedSchedule | None = None,
                  on_step: Callable[[int], None] | None = None) -> WindowSample:
    """Sample the lower face of every frame of a window, all frames as one batch through each step.

    frames_batch: uint8 [N,128,128,3] RGB face crops; ref: uint8 [N,...] or one [128,128,3] reference;
    mels: [N,80,16] windows (`mel_windows`). `model` is already on `device` (fp16 there or not); x_T and the
    masked condition are the same `seed` noise for every frame, so a render is deterministic per seed.
    `on_step(index)` runs after every step (a deadline check: one window can take minutes on a CPU).
    """
    device = torch.device(device)
    config = model.config
    img = faces_to_model(frames_batch)
    ref_img = faces_to_model(ref)
    n, _, size, _ = img.shape
    if ref_img.shape[0] == 1 and n > 1:
        ref_img = ref_img.expand(n, -1, -1, -1)
    mels_t = torch.as_tensor(np.asarray(mels, dtype=np.float32))
    if ref_img.shape[0] != n or mels_t.shape[0] != n:
        raise ValueError(f"{n} frames but {ref_img.shape[0]} references and {mels_t.shape[0]} mel windows")
    mask = lower_face_mask(size, config)
    noise = seed_noise(seed, size)
    cond_img = condition_image(img, mask, noise)

    img, ref_img, mels_t, mask, cond_img = (t.to(device) for t in (img, ref_img, mels_t, mask, cond_img))
    mask_batch = mask.expand(n, -1, -1, -1)
    x_T = noise.to(device).expand(n, -1, -1, -1).contiguous()
    schedule = schedule or RespacedSchedule.create(steps, config)

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(x, t, cond_img=cond_img, mask=mask_batch, ref_img=ref_img, indiv_mels=mels_t)
        return out.float()

    sample = schedule.ddim_sample_loop(denoiser, x_T, clip_denoised=config.clip_denoised, on_step=on_step)
    return WindowSample(faces=compose_faces(sample, img, mask_batch), sample=sample)
