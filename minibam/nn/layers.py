"""The layers BAM is made of: Linear, Conv2d, BatchNorm1d/2d, ReLU, Sigmoid, Flatten.

Each is a thin owner of parameters around one function of [`minibam.functional`][minibam.functional];
the maths and the backward passes live there.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from minibam import functional as F
from minibam.nn import init
from minibam.nn.module import Module, Parameter
from minibam.ops._checks import check_fits, flag, integer, pair, require_tensor
from minibam.tensor import Tensor


def checked_int(value: Any, name: str, layer: str, minimum: int = 1) -> int:
    """A constructor argument that must be an int of at least ``minimum`` (the ops' check)."""
    return integer(value, name, layer, minimum)


class Linear(Module):
    """y = x W^T + b, W (out_features, in_features); PyTorch's default initialisation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = checked_int(in_features, "in_features", "Linear")
        self.out_features = checked_int(out_features, "out_features", "Linear")
        bias = flag(bias, "bias", "Linear")
        # copies=3: the empty weight, init's uniform draw and its astype copy live at once
        check_fits("Linear", "weight", (self.out_features, self.in_features), 8,
                   " (in_features x out_features)", copies=3)
        self.weight = Parameter(np.empty((self.out_features, self.in_features)))
        if bias:
            self.bias = Parameter(np.empty(self.out_features))
        else:
            self.register_parameter("bias", None)
        init.default_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution (cross-correlation, as PyTorch) via im2col; default PyTorch init."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = checked_int(in_channels, "in_channels", "Conv2d")
        self.out_channels = checked_int(out_channels, "out_channels", "Conv2d")
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = pair(stride, "stride", "Conv2d", 1)
        self.padding = pair(padding, "padding", "Conv2d", 0)
        self.dilation = pair(dilation, "dilation", "Conv2d", 1)
        bias = flag(bias, "bias", "Conv2d")
        check_fits("Conv2d", "weight", (self.out_channels, self.in_channels, *self.kernel_size), 8,
                   " (out_channels, in_channels, kernel_size)", copies=3)  # as Linear's
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels, *self.kernel_size)))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels))
        else:
            self.register_parameter("bias", None)
        init.default_init_(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        return text


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d; they differ only in the input rank."""

    _input_ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = checked_int(num_features, "num_features", name)
        # copies=5: weight, bias, the two running statistics and a temporary while copying
        check_fits(name, "each parameter", (self.num_features,), 8, " (num_features)", copies=5)
        for arg, value in (("eps", eps), ("momentum", momentum)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
                raise TypeError(f"{name}: {arg} must be a real number, got {value!r}")
        if eps is None or not eps > 0:
            raise ValueError(f"{name}: eps must be positive, got {eps!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum!r}")
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = flag(affine, "affine", name)
        self.track_running_stats = flag(track_running_stats, "track_running_stats", name)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features))
            self.bias = Parameter(np.zeros(self.num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(self.num_features)))
            self.register_buffer("running_var", Tensor(np.ones(self.num_features)))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        require_tensor(x, "input", name)
        if x.ndim not in self._input_ndims:
            raise ValueError(f"{name}: expected a {self._layout} input, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}: input has {x.shape[1]} channels (shape {x.shape}), "
                f"the layer has num_features={self.num_features}"
            )
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.momentum is None:
            momentum = 1.0 / (int(self.num_batches_tracked) + 1)  # cumulative average, as PyTorch
        y = F.batch_norm(
            x,
            self.running_mean,  # None when not tracking: then batch statistics always
            self.running_var,
            self.weight,
            self.bias,
            training=self.training or self.running_mean is None,
            momentum=momentum,
            eps=self.eps,
        )
        if self.training and self.track_running_stats:
            # After the op succeeded, so a refused batch leaves the counter alone; in
            # place, so that it stays a 0-d int64 array like the one state_dict() copies.
            np.add(self.num_batches_tracked, 1, out=self.num_batches_tracked)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L): statistics per feature across N (and L)."""

    _input_ndims = (2, 3)
    _layout = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W): statistics per channel across N, H and W."""

    _input_ndims = (4,)
    _layout = "4-D (N, C, H, W)"


class ReLU(Module):
    r"""$\max(x, 0)$ elementwise, as a module: [`relu`][minibam.ops.activation.relu]."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    r"""$\sigma(x) = 1 / (1 + e^{-x})$ elementwise, as a module: [`sigmoid`][minibam.ops.activation.sigmoid]."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Flatten(Module):
    """Merge dimensions start_dim..end_dim (default: all but the batch axis)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        require_tensor(x, "input", "Flatten")
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
