"""SadTalker face renderer (face-vid2vid family): canonical keypoints, head pose, SPADE image generator.

State_dict keys and shapes equal the `kp_extractor.`/`kp_detector`, `he_estimator` and `generator` parts of
the official checkpoints. Keypoints are plain tensors `(bs, num_kp, 3)` (upstream wraps them in `{'value': ...}`);
coordinates are in [-1, 1] with the last axis ordered (x, y, z) = (width, height, depth).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- helpers


def coordinate_grid(spatial_size: tuple[int, int, int], dtype: torch.dtype, device=None) -> torch.Tensor:
    """Grid `(d, h, w, 3)` spanning [-1, 1] on each axis; last axis is (x from w, y from h, z from d)."""
    d, h, w = spatial_size

    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=dtype, device=device) / (n - 1)) - 1

    x = axis(w).view(1, 1, w).expand(d, h, w)
    y = axis(h).view(1, h, 1).expand(d, h, w)
    z = axis(d).view(d, 1, 1).expand(d, h, w)
    return torch.stack([x, y, z], dim=3)


def keypoint_gaussians(kp: torch.Tensor, spatial_size: tuple[int, int, int], variance: float) -> torch.Tensor:
    """Isotropic Gaussian blobs `(bs, num_kp, d, h, w)` centred at keypoints `kp` `(bs, num_kp, 3)`."""
    grid = coordinate_grid(spatial_size, kp.dtype, kp.device)
    diff = grid.unsqueeze(0).unsqueeze(0) - kp.view(kp.shape[0], kp.shape[1], 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


class SpectralNormConv2d(nn.Module):
    """Conv2d wrapped by the old `torch.nn.utils.spectral_norm`, inference semantics.

    Holds `bias`, `weight_orig` (parameters) and `weight_u`, `weight_v` (buffers) in that state_dict order, as the
    old API stored them; the effective weight is `weight_orig / (u · W v)` with `W = weight_orig.reshape(out, -1)`
    (no power iteration: the stored u/v are used as they are, like upstream in eval mode).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, bias: bool = True):
        super().__init__()
        self.padding = padding
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        weight = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.weight_orig = nn.Parameter(weight)
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0, eps=1e-12))
        self.register_buffer("weight_v", F.normalize(torch.randn(weight[0].numel()), dim=0, eps=1e-12))

    @property
    def weight(self) -> torch.Tensor:
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)


# --------------------------------------------------------------------------- building blocks


class DownBlock2d(nn.Module):
    """conv3x3 -> BN -> ReLU -> 2x2 average pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(cout)
        self.pool = nn.AvgPool2d(kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
    """conv3x3x3 -> BN -> ReLU -> (1, 2, 2) average pool (depth kept)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Nearest (1, 2, 2) upsample -> conv3x3x3 -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU (or LeakyReLU with slope 0.01), resolution kept."""

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(cout)
        self.ac = nn.LeakyReLU(0.01) if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv(relu(BN(conv(relu(BN(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


class ResBottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck with BN; projected skip when strided."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        mid = channels // 4
        self.conv1 = nn.Conv2d(channels, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, channels, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.norm2 = nn.BatchNorm2d(mid)
        self.norm3 = nn.BatchNorm2d(channels)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(channels, channels, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then subsample by `1/scale` (depthwise); its kernel is the state_dict buffer `weight`."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad_before = size // 2
        self.pad_after = self.pad_before - 1 if size % 2 == 0 else self.pad_before
        pos = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(pos**2) / (2 * sigma**2))
        kernel = g.view(-1, 1) * g.view(1, -1)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.stride = int(1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pad_before, self.pad_after
        x = F.pad(x, (a, b, a, b))
        return F.conv2d(x, self.weight, stride=self.stride, groups=x.shape[1])


class KPHourglass(nn.Module):
    """2-D encoder, 1x1 conv lifted to a 3-D volume of depth `reshape_depth`, 3-D decoder (no skips)."""

    def __init__(self, block_expansion: int, in_features: int, reshape_features: int, reshape_depth: int,
                 num_blocks: int, max_features: int):
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * 2**i)

        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.down_blocks.add_module(f"down{i}", DownBlock2d(in_features if i == 0 else width(i), width(i + 1)))
        self.conv = nn.Conv2d(width(num_blocks), reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.up_blocks.add_module(f"up{i}", UpBlock3d(width(num_blocks - i), width(num_blocks - i - 1)))
        self.reshape_depth = reshape_depth
        self.out_filters = width(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        bs, c, h, w = out.shape
        out = out.view(bs, c // self.reshape_depth, self.reshape_depth, h, w)
        return self.up_blocks(out)


# Same shape as FOMM's 2-D hourglass (engines/fomm/nets.py), over 3-D blocks. Deliberately kept apart:
# each port mirrors its own upstream's module tree and checkpoint keys.
class HourglassEncoder(nn.Module):
    """3-D U-Net encoder; returns the input followed by every block's output."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        widths = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """3-D U-Net decoder: up blocks concatenated with skips, then conv3x3x3 -> BN -> ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(UpBlock3d(cin, min(max_features, block_expansion * 2**i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net; output has `block_expansion + in_features` channels at the input resolution."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# --------------------------------------------------------------------------- KPDetector / HEEstimator


class KPDetector(nn.Module):
    """Canonical 3-D keypoints of a face image: `(bs, 3, H, W)` in [0, 1] -> `(bs, num_kp, 3)`."""

    def __init__(self, block_expansion: int, num_kp: int, image_channel: int, max_features: int,
                 reshape_channel: int, reshape_depth: int, num_blocks: int, temperature: float,
                 scale_factor: float = 1.0):
        super().__init__()
        self.predictor = KPHourglass(block_expansion, image_channel, reshape_channel, reshape_depth,
                                     num_blocks, max_features)
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasDownsample(image_channel, scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor != 1:
            x = self.down(x)
        logits = self.kp(self.predictor(x))
        bs, k, d, h, w = logits.shape
        heatmap = F.softmax(logits.view(bs, k, -1) / self.temperature, dim=2).view(bs, k, d, h, w, 1)
        grid = coordinate_grid((d, h, w), heatmap.dtype, heatmap.device)
        return (heatmap * grid).sum(dim=(2, 3, 4))


class HEEstimator(nn.Module):
    """Head pose bins, translation and expression deltas from an image (ResNet-style bottleneck stack).

    Returns `{'yaw', 'pitch', 'roll'}` logits `(bs, num_bins)`, `'t'` `(bs, 3)`, `'exp'` `(bs, 3*num_kp)`.
    As upstream, `'yaw'` comes from `fc_roll` and `'roll'` from `fc_yaw`. Not used by SadTalker inference.
    """

    def __init__(self, block_expansion: int, num_kp: int, image_channel: int, num_bins: int = 66):
        super().__init__()
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(block_expansion, 256, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(256)
        self.block1 = self._stack("b1", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(512)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = self._stack("b3", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(1024)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = self._stack("b5", 1024, 5)
        self.conv5 = nn.Conv2d(1024, 2048, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(2048)
        self.block6 = ResBottleneck(2048, stride=2)
        self.block7 = self._stack("b7", 2048, 2)
        self.fc_roll = nn.Linear(2048, num_bins)
        self.fc_pitch = nn.Linear(2048, num_bins)
        self.fc_yaw = nn.Linear(2048, num_bins)
        self.fc_t = nn.Linear(2048, 3)
        self.fc_exp = nn.Linear(2048, 3 * num_kp)

    @staticmethod
    def _stack(prefix: str, channels: int, n: int) -> nn.Sequential:
        seq = nn.Sequential()
        for i in range(n):
            seq.add_module(f"{prefix}_{i}", ResBottleneck(channels, stride=1))
        return seq

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.maxpool(F.relu(self.norm1(self.conv1(x))))
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = out.mean(dim=(2, 3))
        return {
            "yaw": self.fc_roll(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_yaw(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }


# --------------------------------------------------------------------------- generator


class DenseMotionNetwork(nn.Module):
    """Dense 3-D warp field, per-keypoint soft masks and an occlusion map from source/driving keypoints."""

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int,
                 feature_channel: int, reshape_depth: int, compress: int, estimate_occlusion_map: bool = False):
        super().__init__()
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
        else:
            self.occlusion = None
        self.num_kp = num_kp

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict:
        """`feature` `(bs, C, d, h, w)` -> `mask` `(bs, K+1, d, h, w)`, `deformation` `(bs, d, h, w, 3)`
        and, if enabled, `occlusion_map` `(bs, 1, h, w)`."""
        bs, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        feature = F.relu(self.norm(self.compress(feature)))

        # Sparse motions: identity (background) + one shifted grid per keypoint.
        identity = coordinate_grid((d, h, w), kp_source.dtype, kp_source.device).view(1, 1, d, h, w, 3)
        shifted = identity - kp_driving.view(bs, self.num_kp, 1, 1, 1, 3)
        shifted = shifted + kp_source.view(bs, self.num_kp, 1, 1, 1, 3)
        motions = torch.cat([identity.expand(bs, 1, d, h, w, 3), shifted], dim=1)  # (bs, K+1, d, h, w, 3)

        c = feature.shape[1]
        repeated = feature.unsqueeze(1).expand(bs, k1, c, d, h, w).reshape(bs * k1, c, d, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(bs * k1, d, h, w, 3), mode="bilinear",
                                 padding_mode="zeros", align_corners=False).view(bs, k1, c, d, h, w)

        heatmap = keypoint_gaussians(kp_driving, (d, h, w), 0.01) - keypoint_gaussians(kp_source, (d, h, w), 0.01)
        heatmap = torch.cat([heatmap.new_zeros(bs, 1, d, h, w), heatmap], dim=1).unsqueeze(2)

        prediction = self.hourglass(torch.cat([heatmap, deformed], dim=2).view(bs, -1, d, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        weights = torch.where(mask < 1e-3, torch.zeros_like(mask), mask).unsqueeze(-1)
        out = {"mask": mask, "deformation": (motions * weights).sum(dim=1)}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(bs, -1, h, w)))
        return out


class SPADE(nn.Module):
    """Spatially-adaptive norm: InstanceNorm(x) * (1 + gamma(seg)) + beta(seg), hidden width 128."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE residual block with spectral-normed convs (learned 1x1 shortcut when widths differ)."""

    def __init__(self, fin: int, fout: int, label_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmid, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmid, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmid, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class SPADEDecoder(nn.Module):
    """Feature `(bs, 256, 64, 64)` -> image `(bs, 3, 256, 256)` in [0, 1]; the feature is also the SPADE map."""

    def __init__(self):
        super().__init__()
        ic, oc, label_nc = 256, 64, 256
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, label_nc))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, label_nc)
        self.up_1 = SPADEResnetBlock(ic, oc, label_nc)
        self.conv_img = nn.Conv2d(oc, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2, mode="nearest"), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2, mode="nearest"), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


class OcclusionAwareSPADEGenerator(nn.Module):
    """Warps a 3-D feature volume of the source image from `kp_source` to `kp_driving` and decodes it."""

    def __init__(self, image_channel: int, feature_channel: int, num_kp: int, block_expansion: int,
                 max_features: int, num_down_blocks: int, reshape_channel: int, reshape_depth: int,
                 num_resblocks: int, estimate_occlusion_map: bool, dense_motion_params: dict):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, feature_channel=feature_channel,
                                                       estimate_occlusion_map=estimate_occlusion_map,
                                                       **dense_motion_params)
        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=3, padding=1)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock2d(widths[i], widths[i + 1]) for i in range(num_down_blocks))
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))
        out_features = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, out_features, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        self.decoder = SPADEDecoder()

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """Source image `(bs, 3, H, W)` -> 3-D feature `(bs, reshape_channel, reshape_depth, H/4, W/4)`."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        bs, _, h, w = out.shape
        return self.resblocks_3d(out.view(bs, self.reshape_channel, self.reshape_depth, h, w))

    def animate(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict:
        """Warp + decode a source feature (from `encode_source`); returns the `forward` dict."""
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        out = F.grid_sample(feature_3d, motion["deformation"], mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        bs, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(bs, c * d, h, w)))
        occlusion = motion.get("occlusion_map")
        if occlusion is not None:
            if occlusion.shape[2:] != out.shape[2:]:
                occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear", align_corners=False)
            out = out * occlusion
        return {**motion, "prediction": self.decoder(out)}

    def forward(self, source_image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> dict:
        """Returns `prediction` `(bs, 3, H, W)` in [0, 1], `mask`, `deformation` and `occlusion_map`."""
        return self.animate(self.encode_source(source_image), kp_driving, kp_source)


# --------------------------------------------------------------------------- 256 configs (facerender.yaml)

_COMMON = {"num_kp": 15, "image_channel": 3}


def kp_detector_256() -> KPDetector:
    """KPDetector with the `kp_detector_params` of SadTalker's facerender.yaml."""
    return KPDetector(block_expansion=32, max_features=1024, scale_factor=0.25, num_blocks=5,
                      reshape_channel=16384, reshape_depth=16, temperature=0.1, **_COMMON)


def generator_256() -> OcclusionAwareSPADEGenerator:
    """OcclusionAwareSPADEGenerator with the `generator_params` of facerender.yaml (used for 256 and 512)."""
    return OcclusionAwareSPADEGenerator(
        feature_channel=32, block_expansion=64, max_features=512, num_down_blocks=2, reshape_channel=32,
        reshape_depth=16, num_resblocks=6, estimate_occlusion_map=True,
        dense_motion_params={"block_expansion": 32, "max_features": 1024, "num_blocks": 5,
                             "reshape_depth": 16, "compress": 4},
        **_COMMON,
    )
