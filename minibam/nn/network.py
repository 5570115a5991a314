"""A small CNN with BAM between its stages, as the paper places BAM in a ResNet:
after every stage but the last, where the feature map is about to be downsampled.

    stem -> stage0 -> bam0 -> stage1 -> bam1 -> ... -> stage_last -> GAP -> linear
"""

from __future__ import annotations

from minibam import functional as F
from minibam.nn.bam import BAM
from minibam.nn.layers import BatchNorm2d, Conv2d, Linear, ReLU, checked_int
from minibam.nn.module import Module, Sequential
from minibam.tensor import Tensor


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> Sequential:
    return Sequential(Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                      BatchNorm2d(c_out), ReLU())


class BAMNet(Module):
    """Conv stages of ``widths`` channels (each after the first halves H and W), with
    a ``BAM`` after each stage but the last when ``use_bam`` is True."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64),
                 use_bam: bool = True, reduction_ratio: int = 4, dilation_val: int = 2,
                 variant: str = "paper") -> None:
        super().__init__()
        if not isinstance(widths, (tuple, list)) or not widths:
            raise TypeError(f"BAMNet: widths must be a non-empty tuple of ints, got {widths!r}")
        for i, width in enumerate(widths):
            checked_int(width, f"widths[{i}]", "BAMNet")
        checked_int(in_channels, "in_channels", "BAMNet")
        checked_int(num_classes, "num_classes", "BAMNet")
        self.use_bam = bool(use_bam)
        self.stem = _conv_bn_relu(in_channels, widths[0], 1)
        previous = widths[0]
        for i, width in enumerate(widths):
            self.add_module(f"stage{i}", _conv_bn_relu(previous, width, 1 if i == 0 else 2))
            if use_bam and i < len(widths) - 1:
                self.add_module(f"bam{i}", BAM(width, reduction_ratio, dilation_val=dilation_val,
                                               variant=variant))
            previous = width
        self.head = Linear(previous, num_classes)

    def bams(self) -> list[BAM]:
        return [m for m in self.children() if isinstance(m, BAM)]

    def features(self, x: Tensor) -> Tensor:
        for name, module in self.named_children():
            if name != "head":
                x = module(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.global_avg_pool2d(self.features(x)))
