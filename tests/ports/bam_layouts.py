"""BAMs in the layouts of public ports (our own code in each layout, small and plain)."""

from __future__ import annotations

import torch
from torch import nn


def _dilated(width: int, count: int, dilation: int, padding: int | str, bn: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(count):
        layers.append(nn.Conv2d(width, width, 3, padding=padding, dilation=dilation))
        layers += [nn.BatchNorm2d(width)] if bn else []
        layers.append(nn.ReLU())
    return layers


class ZooBAM(nn.Module):
    """Layout of an attention-zoo port (e.g. changzy00/pytorch-attention): the channel MLP
    has no hidden BatchNorm but a BatchNorm1d after it; the spatial branch's 1x1 reduction
    has neither BatchNorm nor ReLU; a BatchNorm2d closes the spatial branch; the branches
    are summed and the residual written as x + x * attention."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.mlp_norm = nn.BatchNorm1d(channels)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.context = nn.Sequential(*_dilated(hidden, 2, 4, 4))
        self.to_map = nn.Conv2d(hidden, 1, 1)
        self.map_norm = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        channel = self.mlp_norm(self.mlp(self.pool(x).view(n, c))).view(n, c, 1, 1)
        spatial = self.map_norm(self.to_map(self.context(self.squeeze(x))))
        return x + x * torch.sigmoid(channel + spatial)


class DeepMlpBAM(nn.Module):
    """Layout of a model-zoo port (e.g. xmu-xiaoma666/External-Attention-pytorch): three
    hidden layers in the channel MLP, each with BatchNorm1d and ReLU; three dilated convs of
    dilation 2 with padding="same"; no closing BatchNorm; branches summed, (1 + w) * x."""

    def __init__(self, channels: int, reduction: int = 4, layers: int = 3, dilation: int = 2) -> None:
        super().__init__()
        hidden = channels // reduction
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        widths = [channels] + [hidden] * layers
        ca = [nn.Flatten()]
        for a, b in zip(widths, widths[1:]):
            ca += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.ca = nn.Sequential(*ca, nn.Linear(hidden, channels))
        self.sa = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                *_dilated(hidden, layers, dilation, "same"), nn.Conv2d(hidden, 1, 1))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = self.ca(self.avgpool(x))[:, :, None, None].expand_as(x)
        sa = self.sa(x).expand_as(x)
        return (1 + self.sigmoid(sa + ca)) * x


class ConvMlpBAM(nn.Module):
    """Layout of ports that write the channel MLP as 1x1 convolutions with BatchNorm2d on
    the pooled (N, C, 1, 1) map, and close each branch with a BatchNorm2d; summed."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden),
                                     nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.BatchNorm2d(channels))
        self.spatial = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                     *_dilated(hidden, 2, 4, 4), nn.Conv2d(hidden, 1, 1), nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + torch.sigmoid(self.channel(x) + self.spatial(x)))


class LiteralPaperBAM(nn.Module):
    """BAM written from the paper's equations (1)-(4) alone: M_c = BN(MLP(AvgPool(F))),
    M_s = BN(f_1x1(f_3x3(f_3x3(f_1x1(F))))) with ReLUs between, and no BatchNorm inside the
    branches; F' = F + F * sigmoid(M_c + M_s)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.w0, self.w1 = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        self.bn_c = nn.BatchNorm1d(channels)
        self.f0 = nn.Conv2d(channels, hidden, 1)
        self.f1 = nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4)
        self.f2 = nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4)
        self.f3 = nn.Conv2d(hidden, 1, 1)
        self.bn_s = nn.BatchNorm2d(1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc = self.bn_c(self.w1(self.relu(self.w0(x.mean(dim=(2, 3))))))[:, :, None, None]
        ms = self.bn_s(self.f3(self.relu(self.f2(self.relu(self.f1(self.relu(self.f0(x))))))))
        return x + x * torch.sigmoid(mc + ms)


class OutsideResidualBAM(nn.Module):
    """The released code's branches, but the module returns x * sigmoid(M_c * M_s) and the
    network's block adds x itself (a layout seen in detection necks)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.conv = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                  *_dilated(hidden, 2, 4, 4), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3)))[:, :, None, None] * self.conv(x))


class NoReductionBAM(nn.Module):
    """Not readable as a BAM: the "spatial branch" is one 7x7 conv straight to one map
    (no 1x1 reduction, no dilated convs)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.where = nn.Conv2d(channels, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + torch.sigmoid(self.mlp(x.mean(dim=(2, 3)))[:, :, None, None] + self.where(x)))
