"""MuseTalk's glue around its networks: positional encoding, VAE in and out, the single UNet step.

As upstream's `musetalk/models/{vae,unet}.py` and `scripts/inference.py` (v15):
* VAE input: the 256x256 BGR crop as RGB, /255 (float64, then float32), for the masked copy rows 128..255
  set to 0 *before* normalising to [-1, 1] (so they end at -1);
* latents: 0.18215 * (posterior mean + std * noise) — upstream samples the posterior with the unseeded global
  RNG; here the noise comes from a generator seeded by the request's seed (`sample_noise`), so a render is
  reproducible; the UNet input is [masked | reference] latents, 8 channels;
* audio: the (50, 384) whisper windows plus a sinusoidal table (computed in float32, max_len 5000);
* the UNet runs once at timestep 0 and its output is the predicted latent itself (no sampler);
* decode: latents / 0.18215 -> VAE decoder -> (x/2 + 0.5) clamped -> x255 rounded (half to even) -> uint8
  BGR.
"""

from __future__ import annotations

import math

import numpy as np
import torch

CROP_SIZE = 256
D_MODEL = 384
PE_MAX_LEN = 5000


def positional_table(d_model: int = D_MODEL, max_len: int = PE_MAX_LEN) -> torch.Tensor:
    """[max_len, d_model] float32: sin at even, cos at odd channels of p * 10000^(-2i/d)."""
    position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
    rates = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)
    return table


_TABLE: dict[tuple, torch.Tensor] = {}


def add_positions(windows: torch.Tensor) -> torch.Tensor:
    """[B, T, 384] whisper windows + the table's first T rows (cast to the windows' dtype and device)."""
    key = (windows.device, windows.dtype)
    if key not in _TABLE:
        _TABLE[key] = positional_table().to(windows.device, windows.dtype)
    return windows + _TABLE[key][None, : windows.shape[1]]


def vae_input(crop_bgr: np.ndarray, half_mask: bool) -> torch.Tensor:
    """A 256x256 BGR uint8 crop -> [1, 3, 256, 256] float32 RGB in [-1, 1]; `half_mask` blanks the lower half."""
    crop = np.asarray(crop_bgr)
    if crop.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"expected a {CROP_SIZE}x{CROP_SIZE}x3 crop, got {crop.shape}")
    rgb = (crop[:, :, ::-1] / 255.0).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    if half_mask:
        x[:, :, CROP_SIZE // 2:] = 0
    return (x - 0.5) / 0.5


def encode(vae, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """scaling * (mean + std * noise) of the VAE posterior of `images` ([B,3,256,256] in [-1, 1])."""
    param = next(vae.parameters())
    posterior = vae.encode(images.to(param.device, param.dtype)).latent_dist
    return vae.config.scaling_factor * (posterior.mean + posterior.std * noise.to(posterior.mean))


def unet_input(vae, crops_bgr: np.ndarray, noise: torch.Tensor) -> torch.Tensor:
    """[B, 8, 32, 32] = [masked | reference] latents of B BGR crops; `noise` is [B, 2, 4, 32, 32]."""
    crops = np.asarray(crops_bgr).reshape(-1, CROP_SIZE, CROP_SIZE, 3)
    masked = torch.cat([vae_input(c, True) for c in crops])
    ref = torch.cat([vae_input(c, False) for c in crops])
    both = encode(vae, torch.cat([masked, ref]), torch.cat([noise[:, 0], noise[:, 1]]))
    return torch.cat([both[: len(crops)], both[len(crops):]], dim=1)


def predict_latents(unet, latent_batch: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """The single UNet step: [B,8,32,32] latents + [B,50,384] whisper windows -> [B,4,32,32] latents."""
    param = next(unet.parameters())
    hidden = add_positions(windows.to(param.device, param.dtype))
    timesteps = torch.tensor([0], device=param.device)
    return unet(latent_batch.to(param.device, param.dtype), timesteps, encoder_hidden_states=hidden).sample


def decode_raw(vae, latents: torch.Tensor) -> torch.Tensor:
    """The VAE decoder's output (RGB, about [-1, 1]) for scaled latents."""
    param = next(vae.parameters())
    return vae.decode(latents.to(param.device, param.dtype) / vae.config.scaling_factor).sample


def to_bgr_u8(decoded: torch.Tensor) -> np.ndarray:
    """[B,3,H,W] decoder output -> [B,H,W,3] uint8 BGR, rounded half to even as upstream's numpy."""
    image = (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    return np.ascontiguousarray((image * 255).round().astype(np.uint8)[..., ::-1])


def decode(vae, latents: torch.Tensor) -> np.ndarray:
    """Scaled latents -> [B, 256, 256, 3] uint8 BGR faces."""
    return to_bgr_u8(decode_raw(vae, latents))
