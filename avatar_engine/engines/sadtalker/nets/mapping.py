"""SadTalker `MappingNet`: a 27-frame window of 3DMM coefficients -> head pose bins, translation, keypoint offsets.

Port of OpenTalker/SadTalker (Apache-2.0) `facerender/modules/mapping.py`; keys equal the official
`mapping_00229-model.pth.tar` (coeff_nc 70) / `mapping_00109-model.pth.tar` (coeff_nc 73) `['mapping']` entries.
"""

from __future__ import annotations

import torch
from torch import nn


class MappingNet(nn.Module):
    """Temporal conv encoder + linear heads. Output yaw/pitch/roll are 66-bin logits (not swapped)."""

    def __init__(self, coeff_nc: int = 70, descriptor_nc: int = 1024, layer: int = 3, num_kp: int = 15, num_bins: int = 66):
        super().__init__()
        self.layer = layer
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7, padding=0, bias=True))
        for i in range(layer):
            block = nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, dilation=3))
            setattr(self, f"encoder{i}", block)
        self.fc_roll = nn.Linear(descriptor_nc, num_bins)
        self.fc_pitch = nn.Linear(descriptor_nc, num_bins)
        self.fc_yaw = nn.Linear(descriptor_nc, num_bins)
        self.fc_t = nn.Linear(descriptor_nc, 3)
        self.fc_exp = nn.Linear(descriptor_nc, 3 * num_kp)

    def forward(self, input_3dmm: torch.Tensor) -> dict[str, torch.Tensor]:
        """input_3dmm (bs, coeff_nc, 27) -> {'yaw','pitch','roll': (bs, bins), 't': (bs, 3), 'exp': (bs, 3*num_kp)}."""
        out = self.first(input_3dmm)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        out = out.mean(dim=2)
        return {
            "yaw": self.fc_yaw(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_roll(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }
