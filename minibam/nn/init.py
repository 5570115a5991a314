"""PyTorch's default initialisations, drawn from minibam's one seeded generator.

``Linear`` and ``Conv2d`` use ``kaiming_uniform_(a=sqrt(5))`` for weights, which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for biases.
"""

from __future__ import annotations

import math

import numpy as np

from minibam.random import generator
from minibam.tensor import Tensor


def fan_in(weight: Tensor) -> int:
    """Inputs feeding one output: in_features, or in_channels * kH * kW."""
    if weight.ndim < 2:
        raise ValueError(f"fan_in needs a weight with at least 2 dimensions, got shape {weight.shape}")
    return int(np.prod(weight.shape[1:]))


def uniform_(tensor: Tensor, low: float, high: float) -> Tensor:
    tensor.data = generator().uniform(low, high, size=tensor.shape).astype(tensor.dtype)
    return tensor


def kaiming_uniform_(tensor: Tensor, a: float = 0.0) -> Tensor:
    """U(-b, b) with b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)) (leaky ReLU)."""
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in(tensor))
    return uniform_(tensor, -bound, bound)


def zeros_(tensor: Tensor) -> Tensor:
    tensor.data = np.zeros_like(tensor.data)
    return tensor


def ones_(tensor: Tensor) -> Tensor:
    tensor.data = np.ones_like(tensor.data)
    return tensor


def default_init_(weight: Tensor, bias: Tensor | None) -> None:
    """What ``torch.nn.Linear`` / ``Conv2d.reset_parameters`` do."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(fan_in(weight))
        uniform_(bias, -bound, bound)
