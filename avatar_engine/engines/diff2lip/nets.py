"""Diff2Lip's audio-conditioned denoiser: upstream's `TFGModel` UNet with its `TFGAudioEncoder`.

A clean port of the modified guided-diffusion in github.com/soumik-kanad/diff2lip (`unet.py`, `nn.py`,
`fp16_util.py`; commit 0655a45). Module names and nesting follow upstream so the released checkpoint
(a flat state_dict) loads unchanged: 632 entries, 101,670,630 parameters for the default config.
License of the model and its weights: CC BY-NC 4.0 (non-commercial use only).

What the math must keep to stay identical to upstream:
* timestep embedding [cos, sin] of the original-scale t (0..999), computed in float32 (float64 only for a
  float64 reference);
* GroupNorm32 (32 groups, eps 1e-5) and the attention softmax in at least float32;
* legacy attention order (split heads, then q/k/v), q and k each scaled by ch**-0.25;
* resblock_updown: nearest x2 up / average-pool down inside the ResBlocks;
* audio as style: the audio encoder (its own constant t=0 embedding) pooled to a vector and ADDED to the
  time embedding.

Precision: `convert_to_fp16()` does what upstream does with `--use_fp16 True`: conv weights become half,
Linear layers and norms stay float32, inputs are cast to the torso's dtype. We use it on CUDA (the
checkpoint's authors sampled that way); CPUs run float32, and `.double()` gives a float64 reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import Diff2LipConfig


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding, [cos | sin] halves, computed in float32 as upstream (fp16 networks included).

    A float64 network asks for float64: at t ~ 1000 the phase's float32 rounding (and the CPU's exp
    ULPs) moves the embedding by ~1e-6, which a float64 reference must not inherit.
    """
    dtype = _at_least_float32(dtype)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=timesteps.device) / half)
    args = timesteps[:, None].to(dtype) * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in the (float32 or wider) dtype of its weights, returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype)).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


class TimestepBlock(nn.Module):
    """A module whose forward takes the embedding as a second argument."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that hands the embedding to the children that take one."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2 (the only resampling resblock_updown needs: no conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class ResBlock(TimestepBlock):
    """guided-diffusion's ResBlock: GN-SiLU-conv, + embedding, GN-SiLU-dropout-conv, + skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, *, dropout: float = 0.0,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False,
                 down_stride: int | tuple[int, int] = 2):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(), Upsample()
        elif down:
            self.h_upd = nn.AvgPool2d(kernel_size=down_stride, stride=down_stride)
            self.x_upd = nn.AvgPool2d(kernel_size=down_stride, stride=down_stride)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:  # resample between the norm/activation and the conv, on both paths
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
    """Split heads first, then q, k, v (upstream's legacy order, which the checkpoint was trained with)."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        batch, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(batch * self.n_heads, ch * 3, length).split(ch, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(ch))  # on q and k separately: steadier in fp16
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.to(_at_least_float32(weight.dtype)), dim=-1).to(weight.dtype)
        out = torch.einsum("bts,bcs->bct", weight, v)
        return out.reshape(batch, -1, length)


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, residual."""

    def __init__(self, channels: int, num_head_channels: int):
        super().__init__()
        if channels % num_head_channels:
            raise ValueError(f"{channels} channels are not divisible into heads of {num_head_channels}")
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.attention = QKVAttentionLegacy(channels // num_head_channels)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


class TFGAudioEncoder(nn.Module):
    """[N, 80, 16] mel window -> [N, 128, 8, 8]: Conv1d 80->64, then a 2-D ResBlock pyramid over (64, 16)."""

    def __init__(self, config: Diff2LipConfig):
        super().__init__()
        c = config
        self.model_channels = c.audio_model_channels
        emb_dim = c.audio_model_channels
        self.time_embed = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_block = TimestepEmbedSequential(
            nn.Conv1d(c.audio_dim, c.audio_init_spatial_dim, 3, padding=1),
            normalization(c.audio_init_spatial_dim),
            nn.SiLU(),
        )
        ch = c.audio_channel_mult[0] * c.audio_model_channels
        # the first conv takes a single channel: GroupNorm(32) could not, hence no ResBlock here
        blocks: list[nn.Module] = [TimestepEmbedSequential(nn.Conv2d(1, ch, 3, padding=1))]
        ds = 1
        for level, mult in enumerate(c.audio_channel_mult):
            for _ in range(c.audio_num_res_blocks):
                out_ch = mult * c.audio_model_channels
                blocks.append(TimestepEmbedSequential(ResBlock(ch, emb_dim, out_ch, dropout=c.dropout,
                                                               use_scale_shift_norm=c.use_scale_shift_norm)))
                ch = out_ch
            if level != len(c.audio_channel_mult) - 1:
                # halve the mel-band axis only until it matches the 16 time steps, then both
                stride = (2, 1) if c.audio_init_spatial_dim // ds > c.audio_frames_per_video else (2, 2)
                down = ResBlock(ch, emb_dim, ch, dropout=c.dropout, down=True, down_stride=stride,
                                use_scale_shift_norm=c.use_scale_shift_norm)
                blocks.append(TimestepEmbedSequential(down))
                ds *= 2
        self.encoder_blocks = nn.ModuleList(blocks)
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, c.audio_out_channels, dropout=c.dropout, use_scale_shift_norm=c.use_scale_shift_norm)
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.input_block[0].weight.dtype

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        h = mels.to(self.dtype)
        t = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)  # a constant t=0 embedding
        emb_dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.model_channels, dtype=emb_dtype).to(emb_dtype))
        h = self.input_block(h, emb)
        h = h.reshape(h.shape[0], 1, h.shape[1], h.shape[2])
        for block in self.encoder_blocks:
            h = block(h, emb)
        return self.middle_block(h, emb).to(mels.dtype)


class TFGModel(nn.Module):
    """Diff2Lip's denoiser: predicts epsilon (and the variance interpolation) for the masked lower face.

    forward(x_t, timesteps, cond_img, mask, ref_img, indiv_mels): x_t [N,3,H,W] noisy image, timesteps [N]
    original-scale (0..999), cond_img [N,3,H,W] the frame with its lower half replaced by noise, mask
    [N,1,H,W] 1 on the hidden rows, ref_img [N,3*nrefer,H,W], indiv_mels [N,80,16]. Returns [N,6,H,W].
    """

    def __init__(self, config: Diff2LipConfig | None = None):
        super().__init__()
        c = config or Diff2LipConfig()
        self.config = c
        mc, emb_dim = c.num_channels, c.time_embed_dim
        resblock = dict(dropout=c.dropout, use_scale_shift_norm=c.use_scale_shift_norm)
        if not c.resblock_updown:
            raise ValueError("only resblock_updown=True is ported (the released checkpoint's flag)")
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = input_ch = c.channel_mult[0] * mc
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(c.in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, **resblock)]
                ch = mult * mc
                if ds in c.attention_ds:
                    layers.append(AttentionBlock(ch, c.num_head_channels))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(ResBlock(ch, emb_dim, ch, down=True, **resblock)))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, **resblock),
            AttentionBlock(ch, c.num_head_channels),
            ResBlock(ch, emb_dim, **resblock),
        )

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(c.channel_mult))[::-1]:
            for i in range(c.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, mc * mult, **resblock)]
                ch = mc * mult
                if ds in c.attention_ds:
                    layers.append(AttentionBlock(ch, c.num_head_channels))
                if level and i == c.num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, ch, up=True, **resblock))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, c.out_channels, 3, padding=1))

        self.audio_encoder = TFGAudioEncoder(c)
        self.audio_encoder_to_style = nn.Sequential(
            normalization(c.audio_out_channels), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(c.audio_out_channels, emb_dim, 1), nn.Flatten(),
        )

    @property
    def dtype(self) -> torch.dtype:
        """The torso's dtype: float16 after `convert_to_fp16`, else that of the parameters."""
        return self.input_blocks[0][0].weight.dtype

    def convert_to_fp16(self) -> "TFGModel":
        """Upstream's `--use_fp16`: conv weights and biases of the torso and audio path in half precision.

        Linear layers (both time embeddings, the ResBlocks' embedding projections) and GroupNorm stay
        float32, and so do `out` (the final GN + conv); norms compute in float32.
        """
        def to_half(module: nn.Module) -> None:
            if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                module.weight.data = module.weight.data.half()
                if module.bias is not None:
                    module.bias.data = module.bias.data.half()

        torso = (self.input_blocks, self.middle_block, self.output_blocks)
        for part in (*torso, self.audio_encoder, self.audio_encoder_to_style):
            part.apply(to_half)
        return self

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, *, cond_img: torch.Tensor, mask: torch.Tensor,
                ref_img: torch.Tensor, indiv_mels: torch.Tensor, taps: dict | None = None) -> torch.Tensor:
        """Denoiser output [N, 6, H, W]; `taps`, when given, receives the debug tensors the goldens store."""
        x = x * mask + (1.0 - mask) * cond_img  # the known upper half is given, not noised
        x = torch.cat([x, cond_img, ref_img], dim=1)
        emb_dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.num_channels, dtype=emb_dtype).to(emb_dtype))
        audio = self.audio_encoder(indiv_mels.to(self.audio_encoder.dtype))
        style = self.audio_encoder_to_style(audio)
        if taps is not None:
            taps.update(time_embed_out=emb, audio_encoder_out=audio, audio_style_out=style)
        emb = emb + style

        skips = []
        h = x.to(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        if taps is not None:
            taps["middle_block_out"] = h
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))
