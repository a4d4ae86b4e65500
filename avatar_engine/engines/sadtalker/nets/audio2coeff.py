"""SadTalker audio -> 3DMM coefficient networks: expression (`SimpleWrapperV2`) and head pose (`Audio2Pose`).

Port of OpenTalker/SadTalker (Apache-2.0) `audio2exp_models` and `audio2pose_models`. Module names and
shapes equal the official `audio2exp.` / `audio2pose.` checkpoint entries, so they load strictly. The
chunked inference loops live in `avatar_engine.engines.sadtalker.glue`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ....audio.encoder import mel_encoder


class SimpleWrapperV2(nn.Module):
    """Audio2Exp generator: per-frame mel window + reference expression + blink ratio -> 64 expression coeffs."""

    def __init__(self, exp_dim: int = 64):
        super().__init__()
        self.audio_encoder = mel_encoder()
        self.mapping1 = nn.Linear(512 + exp_dim + 1, exp_dim)

    def forward(self, x: torch.Tensor, ref: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """x (bs*T, 1, 80, 16) batch-major, ref (bs, T, 64), ratio (bs, T[, 1]) -> (bs, T, 64)."""
        n = x.shape[0]
        feat = self.audio_encoder(x).reshape(n, -1)
        y = self.mapping1(torch.cat([feat, ref.reshape(n, -1), ratio.reshape(n, -1)], dim=1))
        return y.reshape(ref.shape[0], ref.shape[1], -1)


class AudioEncoder(nn.Module):
    """Audio2Pose mel encoder: (B, T, 1, 80, 16) -> (B, T, 512).

    Frames are flattened batch-major; upstream's time-major concat is identical for B=1 (all inference uses).
    """

    def __init__(self):
        super().__init__()
        self.audio_encoder = mel_encoder()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        b, t = mels.shape[:2]
        emb = self.audio_encoder(mels.reshape(b * t, *mels.shape[2:]))
        return emb.reshape(b, t, -1)


class ResidualConv(nn.Module):
    """Pre-activation residual block (BN-ReLU-Conv x2) with a Conv+BN skip."""

    def __init__(self, cin: int, cout: int, stride, padding: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, cout, 3, stride, padding),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.conv_skip = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    """Transposed conv wrapper (key `upsample`)."""

    def __init__(self, cin: int, cout: int, kernel, stride):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """Residual U-Net over a (bs, 1, seq_len, 6) pose map, halving/doubling only the time axis."""

    def __init__(self, channel: int = 1, filters: tuple[int, int, int, int] = (32, 64, 128, 256)):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(channel, f0, 3, padding=1), nn.BatchNorm2d(f0), nn.ReLU(), nn.Conv2d(f0, f0, 3, padding=1)
        )
        self.input_skip = nn.Sequential(nn.Conv2d(channel, f0, 3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, (2, 1), 1)
        self.residual_conv_2 = ResidualConv(f1, f2, (2, 1), 1)
        self.bridge = ResidualConv(f2, f3, (2, 1), 1)
        self.upsample_1 = Upsample(f3, f3, (2, 1), (2, 1))
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, 1, 1)
        self.upsample_2 = Upsample(f2, f2, (2, 1), (2, 1))
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, 1, 1)
        self.upsample_3 = Upsample(f1, f1, (2, 1), (2, 1))
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, 1, 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        x6 = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        x8 = self.up_residual_conv2(torch.cat([self.upsample_2(x6), x2], dim=1))
        x10 = self.up_residual_conv3(torch.cat([self.upsample_3(x8), x1], dim=1))
        return self.output_layer(x10)


def _mlp(sizes: list[int], last_act: nn.Module | None) -> nn.Sequential:
    """Linear layers named L0, L1, ... with ReLU (A<i>) between and `last_act` after the last one."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    n = len(sizes) - 1
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers[f"L{i}"] = nn.Linear(a, b)
        if i + 1 < n or last_act is None:
            layers[f"A{i}"] = nn.ReLU()
        else:
            layers["sigmoid"] = last_act
    return nn.Sequential(layers)


class PoseEncoder(nn.Module):
    """CVAE training-time encoder. Inference never runs it; it exists so the checkpoint loads strictly."""

    def __init__(self, layer_sizes, latent_size, num_classes, audio_emb_in_size, audio_emb_out_size, seq_len):
        super().__init__()
        self.resunet = ResUnet()
        first = layer_sizes[0] + latent_size + seq_len * audio_emb_out_size + 6
        self.MLP = _mlp([first, *layer_sizes[1:]], last_act=None)
        self.linear_means = nn.Linear(layer_sizes[-1], latent_size)
        self.linear_logvar = nn.Linear(layer_sizes[-1], latent_size)
        self.linear_audio = nn.Linear(audio_emb_in_size, audio_emb_out_size)
        self.classbias = nn.Parameter(torch.zeros(num_classes, latent_size))


class PoseDecoder(nn.Module):
    """CVAE decoder: (ref pose, z + style bias, audio embedding) -> head-pose motion for `seq_len` frames."""

    def __init__(self, layer_sizes, latent_size, num_classes, audio_emb_in_size, audio_emb_out_size, seq_len):
        super().__init__()
        self.seq_len = seq_len
        self.resunet = ResUnet()
        first = latent_size + seq_len * audio_emb_out_size + 6
        self.MLP = _mlp([first, *layer_sizes], last_act=nn.Sigmoid())
        self.pose_linear = nn.Linear(6, 6)
        self.linear_audio = nn.Linear(audio_emb_in_size, audio_emb_out_size)
        self.classbias = nn.Parameter(torch.zeros(num_classes, latent_size))

    def forward(self, z: torch.Tensor, class_id: torch.Tensor, ref: torch.Tensor, audio_emb: torch.Tensor) -> torch.Tensor:
        """z (bs, latent), class_id (bs,) long, ref (bs, 6), audio_emb (bs, seq_len, 512) -> (bs, seq_len, 6)."""
        bs = z.shape[0]
        audio = self.linear_audio(audio_emb).reshape(bs, -1)
        x = self.MLP(torch.cat([ref, z + self.classbias[class_id], audio], dim=-1))
        pose_emb = self.resunet(x.reshape(bs, 1, self.seq_len, -1))
        return self.pose_linear(pose_emb[:, 0])


class CVAE(nn.Module):
    """Container of the pose CVAE halves (keys `encoder.*`, `decoder.*`)."""

    def __init__(self, encoder: PoseEncoder, decoder: PoseDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


class ConvNormRelu1d(nn.Module):
    """Discriminator block (bias-free Conv1d, BatchNorm1d, ReLU); only its parameters are kept."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)


class PoseSequenceDiscriminator(nn.Module):
    """Training-only motion discriminator; present so the checkpoint loads strictly."""

    def __init__(self, input_channels: int = 6):
        super().__init__()
        self.seq = nn.Sequential(
            ConvNormRelu1d(input_channels, 256, 4, 2, 1),
            ConvNormRelu1d(256, 512, 4, 2, 1),
            ConvNormRelu1d(512, 1024, 3, 1, 1),
            nn.Conv1d(1024, 1, kernel_size=3, stride=1, padding=1, bias=True),
        )


class Audio2Pose(nn.Module):
    """Audio -> head-pose CVAE (upstream `auido2pose.yaml` defaults); `forward` decodes one `seq_len` chunk."""

    def __init__(
        self,
        seq_len: int = 32,
        latent_size: int = 64,
        num_classes: int = 46,
        audio_emb_in_size: int = 512,
        audio_emb_out_size: int = 6,
        encoder_layer_sizes: tuple[int, ...] = (192, 128),
        decoder_layer_sizes: tuple[int, ...] = (128, 192),
        disc_input_channels: int = 6,
    ):
        super().__init__()
        self.seq_len = seq_len
        self.latent_size = latent_size
        self.num_classes = num_classes
        sizes = (latent_size, num_classes, audio_emb_in_size, audio_emb_out_size, seq_len)
        self.audio_encoder = AudioEncoder()
        self.netG = CVAE(PoseEncoder(list(encoder_layer_sizes), *sizes), PoseDecoder(list(decoder_layer_sizes), *sizes))
        self.netD_motion = PoseSequenceDiscriminator(disc_input_channels)

    def forward(self, mels: torch.Tensor, ref_pose: torch.Tensor, class_id: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """mels (bs, n<=seq_len, 1, 80, 16), ref_pose (bs, 6), class_id (bs,), z (bs, latent) -> motion (bs, seq_len, 6).

        Fewer than `seq_len` frames are front-padded by repeating the first frame's audio embedding.
        """
        emb = self.audio_encoder(mels)
        short = self.seq_len - emb.shape[1]
        if short > 0:
            emb = torch.cat([emb[:, :1].expand(-1, short, -1), emb], dim=1)
        return self.netG.decoder(z, class_id, ref_pose, emb)
