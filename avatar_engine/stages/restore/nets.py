"""GFPGAN v1.3 / v1.4 face restorer ("clean" architecture): a U-Net encoder whose bottleneck becomes
StyleGAN2 latents and whose up-path features modulate a StyleGAN2 decoder through SFT.

Port of TencentARC/GFPGAN `GFPGANv1Clean` (Apache-2.0). Module names and parameter shapes follow the
official `GFPGANv1.3.pth` / `GFPGANv1.4.pth` `params_ema` layout exactly, so those files load strictly.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import AvatarError
from ...runtime.loading import load_strict, read_checkpoint


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def _stylegan_channels(narrow: float, channel_multiplier: int) -> dict[int, int]:
    """Channels per resolution (StyleGAN2 table); the U-Net passes `narrow * 0.5` to get half."""
    return {
        4: int(512 * narrow),
        8: int(512 * narrow),
        16: int(512 * narrow),
        32: int(512 * narrow),
        64: int(256 * channel_multiplier * narrow),
        128: int(128 * channel_multiplier * narrow),
        256: int(64 * channel_multiplier * narrow),
        512: int(32 * channel_multiplier * narrow),
        1024: int(16 * channel_multiplier * narrow),
    }


class ResizeResBlock(nn.Module):
    """U-Net block: conv, bilinear resize by `scale`, conv; skip = resized input through a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.leaky_relu(self.conv2(_resize(out, self.scale)), 0.2)
        return out + self.skip(_resize(x, self.scale))


class NormStyleCode(nn.Module):
    """Pixel-norm of style codes; index 0 of `style_mlp`, so the Linear layers keep odd indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv (no bias); `upsample` = bilinear x2 before the conv.

    Computed as conv(x * style) * demod, which equals upstream's per-sample modulated weight but runs
    a batch through one ordinary conv instead of a grouped conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool, upsample: bool):
        super().__init__()
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        # 5-D as in the checkpoint (1, out, in, k, k); the leading 1 is the batch axis of the style.
        self.weight = nn.Parameter(torch.zeros(1, out_channels, in_channels, kernel_size, kernel_size))
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = self.modulation(style)  # (b, in)
        weight = self.weight[0]  # (out, in, k, k)
        if self.upsample:
            x = _resize(x, 2)
        out = F.conv2d(x * style[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            # sum over (in, k, k) of (w * s)^2 = sum_in s^2 * sum_kk w^2
            w_sq = weight.pow(2).sum(dim=(2, 3))  # (out, in)
            demod = torch.rsqrt(style.pow(2) @ w_sq.t() + 1e-8)  # (b, out)
            out = out * demod[:, :, None, None]
        return out


class StyleConv(nn.Module):
    """Modulated conv x sqrt(2), + `weight` x noise, + bias, LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat,
                                              demodulate=True, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        out = out + self.weight * noise + self.bias
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + bias, plus the previous RGB upsampled x2."""

    def __init__(self, in_channels: int, num_style_feat: int):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False, upsample=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + _resize(skip, 2)
        return out


class ConstantInput(nn.Module):
    def __init__(self, num_channel: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, num_channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 generator whose first conv of each level gets SFT scale/shift from the U-Net."""

    def __init__(self, out_size: int, num_style_feat: int, num_mlp: int, channel_multiplier: int,
                 narrow: float, sft_half: bool):
        super().__init__()
        channels = _stylegan_channels(narrow, channel_multiplier)
        log_size = int(math.log(out_size, 2))
        self.num_layers = (log_size - 2) * 2 + 1
        self.num_latent = log_size * 2 - 2
        self.sft_half = sft_half

        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*mlp)

        self.constant_input = ConstantInput(channels[4], 4)
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat, upsample=False)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = channels[4]
        for level in range(3, log_size + 1):
            out_channels = channels[2**level]
            self.style_convs.append(StyleConv(in_channels, out_channels, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_channels, out_channels, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(out_channels, num_style_feat))
            in_channels = out_channels
        # Fixed noise per StyleConv (stored in the checkpoint); used when randomize_noise=False.
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            res = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise{layer}", torch.zeros(1, 1, res, res))

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor], randomize_noise: bool) -> torch.Tensor:
        """`latent` (b, num_latent, num_style_feat); conditions = [scale0, shift0, scale1, shift1, ...]."""
        if randomize_noise:
            noise = [None] * self.num_layers
        else:
            noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        rgb = self.to_rgb1(out, latent[:, 1], None)
        i = 1
        for level, to_rgb in enumerate(self.to_rgbs):
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    same, modulated = torch.split(out, out.shape[1] // 2, dim=1)
                    out = torch.cat([same, modulated * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            rgb = to_rgb(out, latent[:, i + 2], rgb)
            i += 2
        return rgb


def _sft_branch(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, out_channels, 3, 1, 1))


class GFPGANv1Clean(nn.Module):
    """GFPGAN clean generator. Input (b,3,S,S) RGB in [-1,1]; output the restored face, same range (raw)."""

    def __init__(self, out_size: int, num_style_feat: int, channel_multiplier: int, fix_decoder: bool,
                 num_mlp: int, input_is_latent: bool, different_w: bool, narrow: float, sft_half: bool):
        super().__init__()
        self.input_is_latent = input_is_latent
        self.different_w = different_w
        self.num_style_feat = num_style_feat
        channels = _stylegan_channels(narrow * 0.5, channel_multiplier)
        self.log_size = int(math.log(out_size, 2))

        self.conv_body_first = nn.Conv2d(3, channels[2**self.log_size], 1)
        self.conv_body_down = nn.ModuleList()
        in_channels = channels[2**self.log_size]
        for level in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResizeResBlock(in_channels, channels[2 ** (level - 1)], 0.5))
            in_channels = channels[2 ** (level - 1)]
        self.final_conv = nn.Conv2d(in_channels, channels[4], 3, 1, 1)

        self.conv_body_up = nn.ModuleList()
        in_channels = channels[4]
        for level in range(3, self.log_size + 1):
            self.conv_body_up.append(ResizeResBlock(in_channels, channels[2**level], 2))
            in_channels = channels[2**level]
        self.toRGB = nn.ModuleList(nn.Conv2d(channels[2**level], 3, 1) for level in range(3, self.log_size + 1))

        num_latent = (self.log_size * 2 - 2) if different_w else 1
        self.final_linear = nn.Linear(channels[4] * 4 * 4, num_latent * num_style_feat)

        self.stylegan_decoder = StyleGAN2DecoderSFT(out_size, num_style_feat, num_mlp, channel_multiplier,
                                                    narrow, sft_half)
        if fix_decoder:
            self.stylegan_decoder.requires_grad_(False)

        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        for level in range(3, self.log_size + 1):
            c = channels[2**level]
            sft_channels = c if sft_half else 2 * c
            self.condition_scale.append(_sft_branch(c, sft_channels))
            self.condition_shift.append(_sft_branch(c, sft_channels))

    def forward(self, x: torch.Tensor, return_rgb: bool = False, randomize_noise: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns (image, rgb_list); rgb_list holds the U-Net side RGBs (8..S px) when `return_rgb`.

        `randomize_noise=False` (our default, upstream's is True) uses the stored noise buffers, so the
        same face restores identically every frame.
        """
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        unet_skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            unet_skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)

        style_code = self.final_linear(feat.flatten(1))
        if self.different_w:
            latent = style_code.view(style_code.shape[0], -1, self.num_style_feat)
            if not self.input_is_latent:
                latent = self.stylegan_decoder.style_mlp(latent)
        else:
            if not self.input_is_latent:
                style_code = self.stylegan_decoder.style_mlp(style_code)
            latent = style_code.unsqueeze(1).expand(-1, self.stylegan_decoder.num_latent, -1)

        conditions: list[torch.Tensor] = []
        rgbs: list[torch.Tensor] = []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + unet_skips[i])
            conditions.append(self.condition_scale[i](feat))
            conditions.append(self.condition_shift[i](feat))
            if return_rgb:
                rgbs.append(self.toRGB[i](feat))

        image = self.stylegan_decoder(latent, conditions, randomize_noise)
        return image, rgbs


def gfpgan_v14() -> GFPGANv1Clean:
    """The configuration of the official GFPGANv1.3.pth / GFPGANv1.4.pth (also v1.2)."""
    return GFPGANv1Clean(out_size=512, num_style_feat=512, channel_multiplier=2, fix_decoder=False, num_mlp=8,
                         input_is_latent=True, different_w=True, narrow=1, sft_half=True)


def load_gfpgan(path: str | os.PathLike, device: str | torch.device = "cpu") -> GFPGANv1Clean:
    """Build `gfpgan_v14()` and load an official checkpoint strictly (`params_ema`, else `params`).

    Raises AvatarError("engine_unavailable") for a missing, truncated or mismatching file.
    """
    obj = read_checkpoint(path)
    for key in ("params_ema", "params"):
        if isinstance(obj.get(key), dict):
            state_dict = obj[key]
            break
    else:
        raise AvatarError(
            "engine_unavailable",
            f"checkpoint {path} has neither 'params_ema' nor 'params' (top-level keys: {sorted(obj)[:5]});"
            " expected GFPGANv1.3.pth or GFPGANv1.4.pth",
        )
    model = gfpgan_v14()
    load_strict(model, state_dict, path)
    return model.eval().to(device)
