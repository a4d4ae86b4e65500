"""Diff2Lip's sampler: guided-diffusion's respaced Gaussian diffusion, as plain math of its own.

Upstream (soumik-kanad/diff2lip `gaussian_diffusion.py`, `respace.py`): a linear beta schedule
1e-4..0.02 over 1000 steps, respaced to `ddimN` (the DDIM paper's fixed integer stride), epsilon
prediction, LEARNED_RANGE variance (the model's second 3 channels interpolate between the clipped
posterior variance and beta in log space), x0 clipped to [-1, 1], DDIM with eta = 0. The schedule is
kept in float64 as upstream; per step its coefficients are gathered as float32 (upstream's
`_extract_into_tensor`), or float64 when the tensors are.

diffusers' DDIMScheduler was checked against the goldens and not used: see tests/engines/diff2lip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .config import Diff2LipConfig


def linear_betas(config: Diff2LipConfig = Diff2LipConfig()) -> np.ndarray:
    """Ho et al.'s linear schedule, stretched so it stays the same process for any step count."""
    scale = 1000.0 / config.diffusion_steps
    return np.linspace(scale * config.beta_start, scale * config.beta_end, config.diffusion_steps, dtype=np.float64)


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The `ddimN` respacing: range(0, T, stride) for the first integer stride that gives exactly N steps."""
    for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == steps:
            return list(range(0, num_timesteps, stride))
    if steps == num_timesteps:
        return list(range(num_timesteps))
    raise ValueError(f"cannot take exactly {steps} of {num_timesteps} steps with an integer stride")


@dataclass(frozen=True)
class RespacedSchedule:
    """The respaced process: every array has one float64 entry per kept step (index 0 = least noise)."""

    timestep_map: np.ndarray  # original-scale t the model receives for each index (int64)
    betas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    log_betas: np.ndarray

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def create(cls, steps: int | None = None, config: Diff2LipConfig = Diff2LipConfig()) -> "RespacedSchedule":
        steps = config.sampling_steps if steps is None else int(steps)
        base_alphas_cumprod = np.cumprod(1.0 - linear_betas(config))
        kept = ddim_timesteps(config.diffusion_steps, steps)
        # betas of the shortened chain, chosen so that its alphas_cumprod are the kept ones
        previous = np.append(1.0, base_alphas_cumprod[kept][:-1])
        betas = 1.0 - base_alphas_cumprod[kept] / previous
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        return cls(
            timestep_map=np.asarray(kept, dtype=np.int64),
            betas=betas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            posterior_variance=posterior_variance,
            # the variance is 0 at index 0: its log is clipped to index 1's value
            posterior_log_variance_clipped=np.log(np.append(posterior_variance[1], posterior_variance[1:])),
            posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
            log_betas=np.log(betas),
        )

    # --- per-step math, given the model's output -------------------------------------------------

    def _coef(self, array: np.ndarray, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        values = torch.from_numpy(array).to(like.device)[index.to(like.device)].to(dtype)
        return values.view(-1, *([1] * (like.dim() - 1)))

    def p_mean_variance(self, model_output: torch.Tensor, x: torch.Tensor, index: torch.Tensor,
                        clip_denoised: bool = True) -> dict[str, torch.Tensor]:
        """Posterior mean, learned-range log variance and the (clipped) x0 prediction for x at `index`."""
        channels = x.shape[1]
        eps, var_values = model_output[:, :channels], model_output[:, channels:]
        min_log = self._coef(self.posterior_log_variance_clipped, index, x)
        max_log = self._coef(self.log_betas, index, x)
        frac = (var_values + 1) / 2  # the model's [-1, 1] spans [posterior variance, beta]
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self._coef(self.sqrt_recip_alphas_cumprod, index, x) * x - self._coef(
            self.sqrt_recipm1_alphas_cumprod, index, x) * eps
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean = self._coef(self.posterior_mean_coef1, index, x) * pred_xstart + self._coef(
            self.posterior_mean_coef2, index, x) * x
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def ddim_step(self, model_output: torch.Tensor, x: torch.Tensor, index: torch.Tensor, *, eta: float = 0.0,
                  noise: torch.Tensor | None = None, clip_denoised: bool = True) -> dict[str, torch.Tensor]:
        """DDIM update (eq. 12) from index to index-1; eta = 0 (Diff2Lip's setting) draws no noise."""
        out = self.p_mean_variance(model_output, x, index, clip_denoised)
        pred_xstart = out["pred_xstart"]
        # epsilon re-derived from the clipped x0, as upstream does
        eps = (self._coef(self.sqrt_recip_alphas_cumprod, index, x) * x - pred_xstart) / self._coef(
            self.sqrt_recipm1_alphas_cumprod, index, x)
        alpha_bar = self._coef(self.alphas_cumprod, index, x)
        alpha_bar_prev = self._coef(self.alphas_cumprod_prev, index, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        sample = pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        if eta:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            sample = sample + self._nonzero(index, x) * sigma * noise
        return {"sample": sample, "pred_xstart": pred_xstart}

    def p_sample_step(self, model_output: torch.Tensor, x: torch.Tensor, index: torch.Tensor, noise: torch.Tensor,
                      clip_denoised: bool = True) -> dict[str, torch.Tensor]:
        """Ancestral step: the posterior mean plus exp(log_variance / 2) * noise (no noise at index 0)."""
        out = self.p_mean_variance(model_output, x, index, clip_denoised)
        sample = out["mean"] + self._nonzero(index, x) * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    @staticmethod
    def _nonzero(index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (index.to(x.device) != 0).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

    # --- with the model ---------------------------------------------------------------------------

    def model_timesteps(self, index: torch.Tensor) -> torch.Tensor:
        """Original-scale t (0..999) for respaced indices: what the UNet is conditioned on."""
        return torch.from_numpy(self.timestep_map).to(index.device)[index]

    def ddim_sample_loop(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                         *, clip_denoised: bool = True, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        """Run DDIM (eta 0) from x_T = `noise` down to index 0; `denoiser(x, t_original)` is the model."""
        x = noise
        batch = x.shape[0]
        for i in reversed(range(self.num_steps)):
            index = torch.full((batch,), i, dtype=torch.long, device=x.device)
            with torch.no_grad():
                model_output = denoiser(x, self.model_timesteps(index))
                x = self.ddim_step(model_output, x, index, clip_denoised=clip_denoised)["sample"]
            if on_step is not None:
                on_step(i)
        return x
