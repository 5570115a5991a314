"""Three BAMs written in plain PyTorch, for the "Verify your BAM" page (docs/verify.md).

    minibam verify docs/examples/my_bams.py:MyBAM --channels 64
    minibam verify docs/examples/my_bams.py:ReleasedBAM --channels 64
    minibam verify docs/examples/my_bams.py:BuggyBAM --channels 64

- ``MyBAM``: the paper's BAM (closing BatchNorms, branches summed), under names of its own;
- ``ReleasedBAM``: the form of the authors' released code (branches multiplied, no closing
  BatchNorm, the channel branch pooling an H x H window with ``avg_pool2d``);
- ``BuggyBAM``: ``MyBAM`` with one slip: in the spatial branch the ReLU after the first
  convolution comes before its BatchNorm instead of after it.
"""

from __future__ import annotations

import torch
from torch import nn


class MyBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, slip: bool = False) -> None:
        super().__init__()
        hidden = channels // reduction
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, channels), nn.BatchNorm1d(channels),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            *((nn.ReLU(), nn.BatchNorm2d(hidden)) if slip else (nn.BatchNorm2d(hidden), nn.ReLU())),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, 1, 1), nn.BatchNorm2d(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.mlp(x.mean(dim=(2, 3)))[:, :, None, None]
        return x * (1 + torch.sigmoid(channel + self.spatial(x)))


def BuggyBAM(channels: int) -> MyBAM:
    return MyBAM(channels, slip=True)


class ReleasedBAM(nn.Module):
    """Named as in the authors' code, so its checkpoints' keys are minibam's."""

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_val: int = 4) -> None:
        super().__init__()
        hidden = gate_channel // reduction_ratio
        c = nn.Sequential()
        c.add_module("flatten", nn.Flatten())
        c.add_module("gate_c_fc_0", nn.Linear(gate_channel, hidden))
        c.add_module("gate_c_bn_1", nn.BatchNorm1d(hidden))
        c.add_module("gate_c_relu_1", nn.ReLU())
        c.add_module("gate_c_fc_final", nn.Linear(hidden, gate_channel))
        s = nn.Sequential()
        s.add_module("gate_s_conv_reduce0", nn.Conv2d(gate_channel, hidden, 1))
        s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(2):
            s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(hidden, hidden, 3, padding=dilation_val, dilation=dilation_val))
            s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, 1))
        self.channel_att = nn.Module()
        self.channel_att.gate_c = c
        self.spatial_att = nn.Module()
        self.spatial_att.gate_s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the released code's pooling: an H x H window, whatever W is
        pooled = nn.functional.avg_pool2d(x, x.size(2), stride=x.size(2))
        channel = self.channel_att.gate_c(pooled)[:, :, None, None]
        spatial = self.spatial_att.gate_s(x)
        return x * (1 + torch.sigmoid(channel * spatial))
