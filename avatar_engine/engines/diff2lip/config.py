"""The flags Diff2Lip's released checkpoint was trained and sampled with, as one frozen dataclass.

Defaults are upstream's `scripts/inference_single_video.sh` (cross mode) as parsed by its own
`generate.create_argparser()` (github.com/soumik-kanad/diff2lip @ 0655a45). Only what changes the
network's keys, its math, the sampler or the conditioning is here; MPI, file lists and S3FD are not.
"""

from __future__ import annotations

from dataclasses import dataclass

# upstream's `tfg_create_model` hard-codes the channel multipliers per image size
_CHANNEL_MULT = {64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 3, 4, 4), 512: (1, 1, 2, 2, 4, 4)}


@dataclass(frozen=True)
class Diff2LipConfig:
    """Model, diffusion and conditioning flags of the released Diff2Lip checkpoint."""

    # --- UNet (TFGModel) ---
    image_size: int = 128
    num_channels: int = 128
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # feature-map sizes, not downsample factors
    num_head_channels: int = 64  # wins over num_heads (4) whenever it is not -1
    learn_sigma: bool = True  # 6 output channels: epsilon and the variance interpolation
    resblock_updown: bool = True
    use_scale_shift_norm: bool = False
    dropout: float = 0.0
    nrefer: int = 1  # reference frames concatenated to the input (use_ref=True)
    # --- audio encoder (TFGAudioEncoder defaults; audio_as_style=True, encoder_mlp=False) ---
    audio_dim: int = 80
    audio_frames_per_video: int = 16
    audio_init_spatial_dim: int = 64
    audio_model_channels: int = 32
    audio_channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    audio_num_res_blocks: int = 2
    # --- diffusion ---
    diffusion_steps: int = 1000
    beta_start: float = 1e-4  # linear schedule, scaled by 1000/diffusion_steps as upstream
    beta_end: float = 0.02
    timestep_respacing: str = "ddim25"
    clip_denoised: bool = True
    # --- conditioning ---
    face_hide_percentage: float = 0.5
    sampling_seed: int = 7
    syncnet_T: int = 5  # frame k's mel window starts at video frame max(k + 1 - T//2, 0) (upstream loops from 1)
    sampling_batch_size: int = 32  # upstream batches 32 x nframes(5) = 160 frames per sampler call

    @property
    def channel_mult(self) -> tuple[int, ...]:
        try:
            return _CHANNEL_MULT[self.image_size]
        except KeyError:
            known = sorted(_CHANNEL_MULT)
            raise ValueError(f"unsupported image_size {self.image_size}; upstream knows {known}") from None

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsample factors at which attention runs (128 // 32,16,8 = 4, 8, 16)."""
        return tuple(self.image_size // res for res in self.attention_resolutions)

    @property
    def in_channels(self) -> int:
        """Noisy image, masked condition image and the reference frames, 3 channels each."""
        return 3 * (1 + 1 + self.nrefer)

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.num_channels

    @property
    def audio_out_channels(self) -> int:
        return self.audio_model_channels * self.audio_channel_mult[-1]

    @property
    def sampling_steps(self) -> int:
        """Steps of the `ddimN` respacing."""
        if not self.timestep_respacing.startswith("ddim"):
            raise ValueError(f"only ddimN respacing is supported, got {self.timestep_respacing!r}")
        return int(self.timestep_respacing[len("ddim"):])
