"""The Convolutional Block Attention Module (Woo, Park, Lee, Kweon, ECCV 2018).

    M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))        channel gate, (N, C); one MLP
    F'     = F * M_c(F)                                         C -> C/r -> C shared by the pools
    M_s(F') = sigmoid(BN(f^{7x7}([MaxPool_c(F'); AvgPool_c(F')])))   spatial gate, (N, 1, H, W)
    F''    = F' * M_s(F')

BAM (its sibling, minibam.nn.bam) applies its two branches to the same input in parallel
and adds one residual attention; CBAM applies them one after the other and scales the
features directly. Child names follow the authors' released code (``ChannelGate.mlp.1``,
``ChannelGate.mlp.3``, ``SpatialGate.spatial.conv``, ``SpatialGate.spatial.bn``), so its
``state_dict()`` keys and checkpoints are minibam's. Pools are over the whole plane for
any H and W. Derivation: docs/derivations/cbam.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minibam import _config
from minibam import functional as F
from minibam.nn.bam import check_input
from minibam.nn.layers import BatchNorm2d, Conv2d, Flatten, Linear, ReLU, checked_int
from minibam.nn.module import Module, Sequential
from minibam.ops._checks import flag
from minibam.tensor import Tensor

# Plane pools of the channel gate, by the names of the released code's pool_types.
POOLS = {
    "avg": F.global_avg_pool2d,
    "max": F.global_max_pool2d,
    "lp": F.global_lp_pool2d,  # p = 2, as the released code calls lp_pool2d
    "lse": F.global_lse_pool2d,
}
SPATIAL_KERNEL = 7  # the paper's and the released code's 7 x 7 convolution
SPATIAL_BN_MOMENTUM = 0.01  # the released code's BatchNorm momentum (PyTorch's default is 0.1)


def _check_pool_types(pool_types: Any) -> tuple[str, ...]:
    if isinstance(pool_types, str) or not isinstance(pool_types, Sequence):
        raise TypeError(
            f"CBAM: pool_types must be a sequence of names such as ('avg', 'max'), got {pool_types!r}"
        )
    # isinstance first: a list among the names is unhashable, and cannot be looked up in POOLS.
    unknown = [p for p in pool_types if not isinstance(p, str) or p not in POOLS]
    if unknown or not pool_types:
        raise ValueError(
            f"CBAM: pool_types must be a non-empty sequence drawn from {tuple(POOLS)}, got "
            f"{tuple(pool_types)!r}"
        )
    return tuple(pool_types)


class CBAMChannelGate(Module):
    """F' = F * M_c(F), M_c = sigmoid(sum over pool_types of mlp(pool(F))).

    ``mlp``: Flatten, Linear(C, C // r), ReLU, Linear(C // r, C), the released code's
    layout (state_dict names ``mlp.1.*`` and ``mlp.3.*``). The same MLP, with the same
    weights, sees every pooled vector: its gradients are the sums over the pools.
    """

    def __init__(self, gate_channels: int, reduction_ratio: int = 16,
                 pool_types: Sequence[str] = ("avg", "max")) -> None:
        super().__init__()
        self.gate_channels = checked_int(gate_channels, "gate_channels", "CBAM")
        reduction_ratio = checked_int(reduction_ratio, "reduction_ratio", "CBAM")
        hidden = self.gate_channels // reduction_ratio  # floor division, as the released code
        if hidden == 0:
            raise ValueError(
                f"CBAM: gate_channels={self.gate_channels} // reduction_ratio={reduction_ratio} "
                f"is 0: the MLP would have no hidden unit"
            )
        self.pool_types = _check_pool_types(pool_types)
        self.mlp = Sequential(Flatten(), Linear(self.gate_channels, hidden), ReLU(),
                              Linear(hidden, self.gate_channels))

    def channel_map(self, x: Tensor) -> Tensor:
        """M_c as (N, C, 1, 1), after the sigmoid."""
        check_input(x, self.gate_channels, "CBAM", "gate_channels")
        logits = None
        for pool in self.pool_types:
            raw = self.mlp(POOLS[pool](x))
            logits = raw if logits is None else logits + raw
        return F.sigmoid(logits).reshape(x.shape[0], x.shape[1], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.gate(x, self.channel_map(x))

    def extra_repr(self) -> str:
        return f"pool_types={self.pool_types}"


class ChannelPool(Module):
    """(N, C, H, W) -> (N, 2, H, W): max, then mean, over the channels (``F.channel_pool``)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.channel_pool(x)


class CBAMSpatialGate(Module):
    """F'' = F' * M_s(F'), M_s = sigmoid(BN(conv7x7(channel_pool(F')))).

    ``compress`` (no parameters), then ``spatial``: ``conv`` Conv2d(2, 1, 7, padding=3,
    bias=False) and ``bn`` BatchNorm2d(1, momentum=0.01), as the released code.
    """

    def __init__(self) -> None:
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = Sequential()
        self.spatial.add_module("conv", Conv2d(2, 1, SPATIAL_KERNEL, padding=SPATIAL_KERNEL // 2,
                                               bias=False))
        self.spatial.add_module("bn", BatchNorm2d(1, momentum=SPATIAL_BN_MOMENTUM))

    def spatial_map(self, x: Tensor) -> Tensor:
        """M_s as (N, 1, H, W), after the sigmoid."""
        return F.sigmoid(self.spatial(self.compress(x)))

    def forward(self, x: Tensor) -> Tensor:
        return F.gate(x, self.spatial_map(x))


class CBAM(Module):
    """F'' = M_s(F') * F',  F' = M_c(F) * F: the channel gate, then the spatial gate
    (left out with ``no_spatial=True``). See the module docstring."""

    def __init__(self, gate_channels: int, reduction_ratio: int = 16,
                 pool_types: Sequence[str] = ("avg", "max"), no_spatial: bool = False) -> None:
        super().__init__()
        self.ChannelGate = CBAMChannelGate(gate_channels, reduction_ratio, pool_types)
        self.gate_channels = self.ChannelGate.gate_channels
        self.reduction_ratio = int(reduction_ratio)
        self.pool_types = self.ChannelGate.pool_types
        self.no_spatial = flag(no_spatial, "no_spatial", "CBAM")
        if not self.no_spatial:
            self.SpatialGate = CBAMSpatialGate()

    def _check(self, x: Any) -> Tensor:
        check_input(x, self.gate_channels, "CBAM", "gate_channels")
        n, _, h, w = x.shape
        if self.training and not self.no_spatial and n * h * w == 1:
            raise ValueError(
                f"CBAM: the spatial gate's batch norm has one value per channel for input "
                f"shape {x.shape} in training mode (batch statistics are undefined); use more "
                f"than one sample or pixel, or call .eval()"
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        x = self.ChannelGate(x)
        if not self.no_spatial:
            x = self.SpatialGate(x)
        return x

    def attention_maps(self, x: Tensor) -> dict[str, np.ndarray]:
        """The maps for plotting, as arrays: "channel" M_c (N, C), "spatial" M_s (N, H, W)
        (computed on F' = M_c * F; ones with ``no_spatial``) and "attention" (N, C, H, W)
        = M_c * M_s, the factor by which CBAM scales each value of F. All are after the
        sigmoid, as the paper defines them (BAM's "channel" and "spatial" come before it).
        Records no graph and leaves the running statistics as they were."""
        self._check(x)
        buffers = {name: np.array(b.data if isinstance(b, Tensor) else b)
                   for name, b in self.named_buffers()}
        try:
            with _config.no_grad():
                mc = self.ChannelGate.channel_map(x)
                if self.no_spatial:
                    ms = np.ones((x.shape[0], 1, *x.shape[2:]), dtype=mc.dtype)
                else:
                    ms = self.SpatialGate.spatial_map(x * mc).data
        finally:
            self.load_state_dict(buffers, strict=False)
        mc = mc.data
        return {"channel": mc[:, :, 0, 0].copy(), "spatial": ms[:, 0].copy(), "attention": mc * ms}

    def extra_repr(self) -> str:
        return f"pool_types={self.pool_types}, no_spatial={self.no_spatial}"
