"""Two CBAMs written in plain PyTorch, for the CBAM page (docs/cbam.md).

    minibam verify docs/examples/my_cbams.py:MyCBAM --module cbam --channels 64
    minibam verify docs/examples/my_cbams.py:PortedCBAM --module cbam --channels 64

- ``MyCBAM``: the released code's function, under names of its own;
- ``PortedCBAM``: the same with the copy-paste slip found in ports: the channel gate adds
  the average pool's MLP output to itself (``x1 + x1``) instead of the max pool's.
"""

from __future__ import annotations

import torch
from torch import nn


class MyCBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, copy_paste_slip: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)
        self.copy_paste_slip = copy_paste_slip

    def mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.mlp(x.mean(dim=(2, 3)))
        x2 = self.mlp(x.amax(dim=(2, 3)))
        channel = torch.sigmoid(x1 + x1 if self.copy_paste_slip else x1 + x2)
        x = x * channel[:, :, None, None]
        pooled = torch.cat([x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


def PortedCBAM(channels: int) -> MyCBAM:
    return MyCBAM(channels, copy_paste_slip=True)
