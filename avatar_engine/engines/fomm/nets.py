"""First Order Motion Model networks (Siarohin et al., NeurIPS 2019), vox-256 configuration.

Written from the paper and the architecture of github.com/AliaksandrSiarohin/first-order-model
(code MIT since 2023-06, CC BY-NC 4.0 before). `state_dict()` keys, shapes and order equal the
`kp_detector` / `generator` entries of the official `vox-cpk.pth.tar` / `vox-adv-cpk.pth.tar`
(Google Drive / Yandex links in the upstream README; trained on VoxCeleb, research use).

Conventions kept from upstream because the checkpoint was trained with them:
* keypoint values are (x, y) in [-1, 1] on a grid whose ends are the centres of the corner pixels;
* every `grid_sample` is bilinear, zero padding, `align_corners=False` (what upstream's call without
  the argument means under torch >= 1.3, and what the golden fixtures pin);
* batch norm is inference-only (running statistics, eps 1e-5).

Pure modules: no file access, no device choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

Keypoints = dict[str, torch.Tensor]  # {"value": (B, K, 2), "jacobian": (B, K, 2, 2)}


@dataclass(frozen=True)
class FommConfig:
    """Constructor arguments of `config/vox-256.yaml` (`vox-adv-256.yaml` only changes the discriminator)."""

    num_kp: int = 10
    num_channels: int = 3
    estimate_jacobian: bool = True
    # keypoint detector
    kp_block_expansion: int = 32
    kp_max_features: int = 1024
    kp_num_blocks: int = 5
    kp_temperature: float = 0.1
    kp_scale_factor: float = 0.25
    # generator
    gen_block_expansion: int = 64
    gen_max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    estimate_occlusion_map: bool = True
    # dense motion network (inside the generator)
    dm_block_expansion: int = 64
    dm_max_features: int = 1024
    dm_num_blocks: int = 5
    dm_scale_factor: float = 0.25
    kp_variance: float = 0.01


VOX_256 = FommConfig()


# --- geometry helpers -------------------------------------------------------------------------


def coordinate_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(h, w, 2) grid of (x, y) spanning exactly [-1, 1] (corner pixel centres), dtype/device of `like`."""
    x = torch.arange(w, dtype=like.dtype, device=like.device)
    y = torch.arange(h, dtype=like.dtype, device=like.device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    return torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)], dim=-1)


def kp_gaussians(value: torch.Tensor, h: int, w: int, variance: float) -> torch.Tensor:
    """(B, K, h, w) unnormalised Gaussians of the given variance around each keypoint (B, K, 2)."""
    grid = coordinate_grid(h, w, value)
    diff = grid.view(1, 1, h, w, 2) - value.view(*value.shape[:2], 1, 1, 2)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def expand_kp(kp: Keypoints, batch: int) -> Keypoints:
    """Broadcast a batch-1 keypoint dict to `batch` (views, no copies)."""
    return {k: (v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v) for k, v in kp.items()}


# --- building blocks --------------------------------------------------------------------------


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then integer subsampling. The kernel is a buffer named `weight` (it is in the
    checkpoint): sigma = (1/scale - 1)/2, size 2*round(4 sigma)+1 (13 for scale 0.25)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad = size // 2
        self.step = int(1 / scale)
        self.groups = channels
        t = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g1 = torch.exp(-(t ** 2) / (2 * sigma ** 2))
        kernel = g1[:, None] * g1[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a stride-`step` conv computes exactly the samples upstream keeps with [::step, ::step]
        x = F.pad(x, (self.pad, self.pad, self.pad, self.pad))
        return F.conv2d(x, self.weight, groups=self.groups, stride=self.step)


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU at the same resolution."""

    def __init__(self, cin: int, cout: int, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(SameBlock2d):
    """conv -> BN -> ReLU -> 2x2 average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class UpBlock2d(SameBlock2d):
    """nearest x2 upsampling -> conv -> BN -> ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: BN -> ReLU -> conv -> BN -> ReLU -> conv, plus the input."""

    def __init__(self, channels: int, kernel_size=3, padding=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(channels, affine=True)
        self.norm2 = nn.BatchNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


# The hourglass has the same shape as SadTalker's 3-D one (engines/sadtalker/nets/facerender.py), over 2-D
# blocks. Deliberately kept apart: each port mirrors its own upstream's module tree and checkpoint keys.
class HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        chans = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock2d(chans[i], chans[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(UpBlock2d(cin, min(max_features, block_expansion * 2 ** i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net: `num_blocks` down blocks, as many up blocks, each concatenated with the matching skip."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# --- keypoint detector ------------------------------------------------------------------------


class KPDetector(nn.Module):
    """Image (B, 3, 256, 256) in [0, 1] RGB -> {"value": (B, K, 2), "jacobian": (B, K, 2, 2)}.

    Each keypoint is the mean of a softmax heatmap (58x58: the 7x7 heads have no padding); its
    Jacobian is the heatmap-weighted mean of a 4-channel map read as a row-major 2x2 matrix.
    """

    def __init__(self, cfg: FommConfig = VOX_256):
        super().__init__()
        self.cfg = cfg
        self.predictor = Hourglass(cfg.kp_block_expansion, cfg.num_channels, cfg.kp_num_blocks, cfg.kp_max_features)
        self.kp = nn.Conv2d(self.predictor.out_filters, cfg.num_kp, kernel_size=7, padding=0)
        self.jacobian = (
            nn.Conv2d(self.predictor.out_filters, 4 * cfg.num_kp, kernel_size=7, padding=0)
            if cfg.estimate_jacobian else None
        )
        if self.jacobian is not None:  # untrained: identity Jacobians, as upstream initialises them
            nn.init.zeros_(self.jacobian.weight)
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * cfg.num_kp))
        if cfg.kp_scale_factor != 1:
            self.down = AntiAliasDownsample(cfg.num_channels, cfg.kp_scale_factor)

    def forward(self, image: torch.Tensor) -> Keypoints:
        x = self.down(image) if self.cfg.kp_scale_factor != 1 else image
        features = self.predictor(x)
        logits = self.kp(features)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.view(b, k, h * w) / self.cfg.kp_temperature, dim=2).view(b, k, h, w)
        grid = coordinate_grid(h, w, heatmap)
        out = {"value": (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))}
        if self.jacobian is not None:
            jac_map = self.jacobian(features).view(b, k, 4, h, w)
            jac = (heatmap.unsqueeze(2) * jac_map).view(b, k, 4, h * w).sum(dim=-1)
            out["jacobian"] = jac.view(b, k, 2, 2)
        return out


# --- generator --------------------------------------------------------------------------------


class DenseMotionNetwork(nn.Module):
    """Keypoints -> dense backward flow (driving -> source), per-keypoint masks and an occlusion map,
    computed at 1/4 resolution from the blurred, subsampled source image."""

    def __init__(self, cfg: FommConfig = VOX_256):
        super().__init__()
        self.cfg = cfg
        k, c = cfg.num_kp, cfg.num_channels
        self.hourglass = Hourglass(cfg.dm_block_expansion, (k + 1) * (c + 1), cfg.dm_num_blocks, cfg.dm_max_features)
        self.mask = nn.Conv2d(self.hourglass.out_filters, k + 1, kernel_size=7, padding=3)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3) if cfg.estimate_occlusion_map else None
        )
        if cfg.dm_scale_factor != 1:
            self.down = AntiAliasDownsample(c, cfg.dm_scale_factor)

    def downsample(self, source_image: torch.Tensor) -> torch.Tensor:
        return self.down(source_image) if self.cfg.dm_scale_factor != 1 else source_image

    def sparse_motions(self, h: int, w: int, kp_driving: Keypoints, kp_source: Keypoints) -> torch.Tensor:
        """(B, K+1, h, w, 2): channel 0 the identity (background), channel k the first-order
        approximation  z -> kp_s + J_s J_d^-1 (z - kp_d)  around keypoint k (paper eq. 4)."""
        value_d, value_s = kp_driving["value"], kp_source["value"]
        b, k = value_d.shape[:2]
        identity = coordinate_grid(h, w, value_s).view(1, 1, h, w, 2)
        rel = identity - value_d.view(b, k, 1, 1, 2)
        if "jacobian" in kp_driving:
            jac = torch.matmul(kp_source["jacobian"], torch.inverse(kp_driving["jacobian"]))  # (B, K, 2, 2)
            rel = torch.einsum("bkij,bkhwj->bkhwi", jac, rel)
        to_source = rel + value_s.view(b, k, 1, 1, 2)
        return torch.cat([identity.expand(b, 1, h, w, 2), to_source], dim=1)

    def forward_small(self, small_source: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints) -> dict:
        """Same as `forward` on an already downsampled source (batch 1 is broadcast to the keypoints')."""
        b = kp_driving["value"].shape[0]
        kp_source = expand_kp(kp_source, b)
        if small_source.shape[0] != b:
            small_source = small_source.expand(b, *small_source.shape[1:])
        _, c, h, w = small_source.shape
        k = self.cfg.num_kp
        heat = (kp_gaussians(kp_driving["value"], h, w, self.cfg.kp_variance)
                - kp_gaussians(kp_source["value"], h, w, self.cfg.kp_variance))
        heat = torch.cat([heat.new_zeros(b, 1, h, w), heat], dim=1).unsqueeze(2)  # (B, K+1, 1, h, w)

        motions = self.sparse_motions(h, w, kp_driving, kp_source)
        repeated = small_source.unsqueeze(1).expand(b, k + 1, c, h, w).reshape(b * (k + 1), c, h, w)
        sparse_deformed = _sample(repeated, motions.reshape(b * (k + 1), h, w, 2)).view(b, k + 1, c, h, w)

        features = self.hourglass(torch.cat([heat, sparse_deformed], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(features), dim=1)
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)  # (B, h, w, 2)
        out = {"sparse_deformed": sparse_deformed, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(features))
        return out

    def forward(self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints) -> dict:
        return self.forward_small(self.downsample(source_image), kp_driving, kp_source)


class SourceEncoding(NamedTuple):
    """What the generator needs of the source image, computed once per render (batch 1)."""

    image: torch.Tensor  # (1, 3, H, W) the source image itself (for the `deformed` preview)
    small: torch.Tensor  # (1, 3, H/4, W/4) the dense-motion network's blurred copy
    features: torch.Tensor  # (1, 256, H/4, W/4) encoder output


class OcclusionAwareGenerator(nn.Module):
    """Source image + source/driving keypoints -> the source re-posed like the driving frame.

    The encoder features are warped by the dense flow, multiplied by the occlusion map, then decoded
    (6 residual blocks, two x2 up blocks, 7x7 conv, sigmoid). Returns upstream's dict: prediction,
    mask, occlusion_map, sparse_deformed, deformation and deformed (the source warped at full size).

    Speed: `encode_source` runs the encoder and the dense-motion downsampling once; `animate` takes
    that encoding (batch 1) with a batch of N driving keypoints and broadcasts the source to N
    (expand views, no copies of the encoder), so N frames cost one decoder batch.
    """

    def __init__(self, cfg: FommConfig = VOX_256):
        super().__init__()
        self.cfg = cfg
        self.dense_motion_network = DenseMotionNetwork(cfg)
        be, mf, nd = cfg.gen_block_expansion, cfg.gen_max_features, cfg.num_down_blocks
        self.first = SameBlock2d(cfg.num_channels, be, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(mf, be * 2 ** i), min(mf, be * 2 ** (i + 1))) for i in range(nd)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(min(mf, be * 2 ** (nd - i)), min(mf, be * 2 ** (nd - i - 1))) for i in range(nd)
        )
        bottleneck = min(mf, be * 2 ** nd)
        self.bottleneck = nn.Sequential()
        for i in range(cfg.num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(bottleneck))
        self.final = nn.Conv2d(be, cfg.num_channels, kernel_size=7, padding=3)

    def encode_source(self, source_image: torch.Tensor) -> SourceEncoding:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return SourceEncoding(source_image, self.dense_motion_network.downsample(source_image), out)

    @staticmethod
    def warp(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Sample `inp` at the flow, resizing the flow bilinearly first when the sizes differ."""
        if deformation.shape[1:3] != inp.shape[2:]:
            flow = deformation.permute(0, 3, 1, 2)
            flow = F.interpolate(flow, size=inp.shape[2:], mode="bilinear", align_corners=False)
            deformation = flow.permute(0, 2, 3, 1)
        return _sample(inp, deformation)

    def animate(self, source: SourceEncoding, kp_driving: Keypoints, kp_source: Keypoints, *,
                previews: bool = True) -> dict:
        """Render N frames (N = batch of `kp_driving`) from one encoded source. `previews=False`
        skips the full-size `deformed` image, which inference does not need."""
        b = kp_driving["value"].shape[0]
        motion = self.dense_motion_network.forward_small(source.small, kp_driving, kp_source)
        features = source.features
        if features.shape[0] != b:
            features = features.expand(b, *features.shape[1:])
        out = self.warp(features, motion["deformation"])
        occlusion = motion.get("occlusion_map")
        if occlusion is not None:
            if occlusion.shape[2:] != out.shape[2:]:
                occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear", align_corners=False)
            out = out * occlusion
        result = dict(motion)
        if previews:
            image = source.image
            if image.shape[0] != b:
                image = image.expand(b, *image.shape[1:])
            result["deformed"] = self.warp(image, motion["deformation"])
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        result["prediction"] = torch.sigmoid(self.final(out))
        return result

    def forward(self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints) -> dict:
        return self.animate(self.encode_source(source_image), kp_driving, kp_source)
