"""Squeeze-and-Excitation (Hu, Shen, Sun, CVPR 2018): the channel attention the BAM paper
compares against.

    z = GAP(x)                                  squeeze, (N, C, 1, 1)
    s = sigmoid(fc2(ReLU(fc1(z))))              excitation, (N, C, 1, 1)
    y = x * s                                   each channel scaled

``fc1`` (C -> S) and ``fc2`` (S -> C) are 1x1 convolutions with bias, so the
``state_dict()`` names and shapes are those of ``torchvision.ops.SqueezeExcitation``
(``fc1.weight`` (S, C, 1, 1), ``fc1.bias``, ``fc2.weight`` (C, S, 1, 1), ``fc2.bias``)
and its checkpoints load unchanged. Every step is an op with its own backward; there is
no batch norm, so training and evaluation compute the same.
"""

from __future__ import annotations

from minibam import functional as F
from minibam.nn.bam import check_input
from minibam.nn.layers import Conv2d, ReLU, Sigmoid, checked_int
from minibam.nn.module import Module
from minibam.tensor import Tensor


class SqueezeExcitation(Module):
    """y = x * sigmoid(fc2(ReLU(fc1(GAP(x))))); see the module docstring."""

    def __init__(self, input_channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.input_channels = checked_int(input_channels, "input_channels", "SqueezeExcitation")
        self.squeeze_channels = checked_int(squeeze_channels, "squeeze_channels", "SqueezeExcitation")
        self.fc1 = Conv2d(self.input_channels, self.squeeze_channels, 1)
        self.fc2 = Conv2d(self.squeeze_channels, self.input_channels, 1)
        self.activation = ReLU()
        self.scale_activation = Sigmoid()

    def scale(self, x: Tensor) -> Tensor:
        """The excitation s, (N, C, 1, 1), after the sigmoid."""
        check_input(x, self.input_channels, "SqueezeExcitation", "input_channels")
        z = F.global_avg_pool2d(x).reshape(x.shape[0], x.shape[1], 1, 1)
        return self.scale_activation(self.fc2(self.activation(self.fc1(z))))

    def forward(self, x: Tensor) -> Tensor:
        return F.gate(x, self.scale(x))

    def extra_repr(self) -> str:
        return f"input_channels={self.input_channels}, squeeze_channels={self.squeeze_channels}"
