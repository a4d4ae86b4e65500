"""The mel encoder network shared by Wav2Lip and SadTalker (same layers, same checkpoint keys).

(N, 1, 80 mel, 16 t) -> (N, 512, 1, 1). Upstream: Rudrabha/Wav2Lip `models/wav2lip.py` audio_encoder;
SadTalker's `audio2exp`/`audio2pose` audio encoders are copies of it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBNReLU(nn.Module):
    """Conv (with bias) -> BatchNorm -> [+ input] -> ReLU; keys `conv_block.0` / `conv_block.1`."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


def down_block(cin: int, cout: int, n_res: int, stride=2) -> nn.Sequential:
    """A stride-2 (or given stride) 3x3 block followed by `n_res` residual 3x3 blocks."""
    layers = [ConvBNReLU(cin, cout, 3, stride, 1)]
    layers += [ConvBNReLU(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)]
    return nn.Sequential(*layers)


def mel_encoder() -> nn.Sequential:
    """(N, 1, 80 mel, 16 t) -> (N, 512, 1, 1). A flat Sequential because checkpoints index it 0..12;
    SadTalker's audio encoders are this same network (their keys match)."""
    return nn.Sequential(
        *down_block(1, 32, 2, stride=1),
        *down_block(32, 64, 2, stride=(3, 1)),
        *down_block(64, 128, 2, stride=3),
        *down_block(128, 256, 1, stride=(3, 2)),
        ConvBNReLU(256, 512, 3, 1, 0),
        ConvBNReLU(512, 512, 1, 1, 0),
    )
