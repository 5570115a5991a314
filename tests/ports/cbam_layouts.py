"""CBAMs in the layouts of public ports (our own code in each layout, small and plain)."""

from __future__ import annotations

import torch
from torch import nn


def _mean_max(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)


def _max_mean(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class ImageModelCBAM(nn.Module):
    """Layout of image-model libraries (e.g. timm's CbamModule): fc1/fc2 1x1 convs without
    bias, pools written as x.mean / x.amax; the spatial gate stacks [mean; max] into a conv
    without bias followed by a BatchNorm2d (PyTorch's momentum 0.1)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3, bias=False), nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def mlp(p: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(p)))

        x = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.spatial(_mean_max(x)))


class _Channel(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the map only: the caller multiplies
        return self.sigmoid(self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
                            + self.fc2(self.relu1(self.fc1(self.max_pool(x)))))


class _Spatial(nn.Module):
    def __init__(self, kernel: int = 7, bias: bool = False, order: str = "mean-max") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=bias)
        self.sigmoid = nn.Sigmoid()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _mean_max(x) if self.order == "mean-max" else _max_mean(x)
        return self.sigmoid(self.conv1(pooled))


class TutorialCBAM(nn.Module):
    """Layout of the most copied tutorial (luuuyi/CBAM.PyTorch, inlined into many
    repositories): ChannelAttention and SpatialAttention return maps, the block multiplies;
    1x1-conv MLP without bias, [avg; max] into a 7x7 conv without bias, no BatchNorm."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.ca, self.sa = _Channel(channels, reduction), _Spatial()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ca(x) * x
        return self.sa(x) * x


class ResidualCBAM(nn.Module):
    """Layout of a model-zoo block (e.g. xmu-xiaoma666/External-Attention-pytorch's
    CBAMBlock): a shared 1x1-conv MLP without bias, [max; avg] into a conv with a bias (and
    a kernel of the user's choice), no BatchNorm, and the block returns CBAM(x) + x."""

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 5) -> None:
        super().__init__()
        self.ca, self.sa = _Channel(channels, reduction), _Spatial(kernel, bias=True, order="max-mean")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self.ca(x)
        return out * self.sa(out) + x


class NoBottleneckCBAM(nn.Module):
    """Layout of a YOLO library (ultralytics' CBAM): the channel gate is one 1x1 conv with
    bias on the average pool only (no bottleneck, no max pool); the spatial gate [mean; max]
    into a 7x7 conv without bias, no BatchNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool, self.fc, self.act = nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.Sigmoid()
        self.cv1, self.act2 = nn.Conv2d(2, 1, 7, padding=3, bias=False), nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.act(self.fc(self.pool(x)))
        return x * self.act2(self.cv1(_mean_max(x)))


class ParallelCBAM(nn.Module):
    """Layout of a detection project's CBAM (fuboylxw/Classroom_Abnormal_Behavior_Analysis_System):
    both gates read the input x and the block returns x * channel * spatial; average pool
    only, convs with bias, no BatchNorm."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        self.channel_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                                               nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.spatial_attention = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_attention(x) * self.spatial_attention(_mean_max(x))


class _ConvAct(nn.Module):
    """A conv and its activation in one block, as detection toolboxes' ConvModule nests them."""

    def __init__(self, cin: int, cout: int, kernel: int, act: nn.Module | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
        self.activate = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x))


class ToolboxCBAM(nn.Module):
    """Layout of detection toolboxes (open-mmlab/mmyolo's CBAM plugin): conv blocks with a
    bias (no norm layer), the MLP as two of them, the spatial gate one block whose
    activation is the sigmoid; [avg; max]."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(_ConvAct(channels, channels // reduction, 1, nn.ReLU()),
                                _ConvAct(channels // reduction, channels, 1, None))
        self.spatial = _ConvAct(2, 1, 7, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x))) * x
        return self.spatial(_mean_max(x)) * x


class LightCBAM(nn.Module):
    """Not readable as a CBAM: timm's experimental LightCbamModule layout, whose spatial conv
    reads one map (0.5 * mean + 0.5 * max), not two stacked."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.conv = nn.Sequential(nn.Conv2d(1, 1, 7, padding=3, bias=False), nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = 0.5 * x.mean((2, 3), keepdim=True) + 0.5 * x.amax((2, 3), keepdim=True)
        x = x * torch.sigmoid(self.fc2(torch.relu(self.fc1(pooled))))
        one = 0.5 * x.mean(dim=1, keepdim=True) + 0.5 * x.amax(dim=1, keepdim=True)
        return x * torch.sigmoid(self.conv(one))
