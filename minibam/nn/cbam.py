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
from minibam.nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, ReLU, checked_int
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


GATES = ("sigmoid", "identity")  # "identity": the gate without its sigmoid (a port mistake)
SPATIAL_INPUTS = ("refined", "input")


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"CBAM: {name} must be one of {allowed}, got {value!r}")
    return value


def _gate_fn(kind: str) -> Any:
    return F.sigmoid if kind == "sigmoid" else (lambda t: t)


def channel_mlp(channels: int, hidden: Sequence[int], bias: bool = True, bn: bool = False,
                bn_momentum: float | None = 0.1) -> Sequential:
    """Flatten, then per hidden width a Linear (a BatchNorm1d with ``bn``) and a ReLU, then
    the Linear back to C. The default, one hidden width, is the released code's ``mlp``
    (``mlp.1``, ``mlp.3``)."""
    widths = [channels, *hidden, channels]
    layers: list[Module] = [Flatten()]
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers.append(Linear(a, b, bias=bias))
        if bn:
            layers.append(BatchNorm1d(b, momentum=bn_momentum))
        layers.append(ReLU())
    layers.append(Linear(widths[-2], widths[-1], bias=bias))
    return Sequential(*layers)


class CBAMChannelGate(Module):
    """F' = F * M_c(F), M_c = sigmoid(sum over pool_types of mlp(pool(F))).

    ``mlp``: Flatten, Linear(C, C // r), ReLU, Linear(C // r, C), the released code's
    layout (state_dict names ``mlp.1.*`` and ``mlp.3.*``). The same MLP, with the same
    weights, sees every pooled vector: its gradients are the sums over the pools.

    Keyword-only options for other layouts: ``hidden`` widths (``()``: one Linear(C, C),
    no bottleneck), ``bias``, ``bn`` (a BatchNorm1d after each hidden layer); and, to
    reproduce port mistakes by name, ``shared=False`` (one MLP per pool: ``mlp``,
    ``mlp1``, ...), ``gate="identity"`` (no sigmoid) and ``pool_terms="first-twice"``
    (the first pool's term counted twice, the others dropped).
    """

    def __init__(self, gate_channels: int, reduction_ratio: int = 16,
                 pool_types: Sequence[str] = ("avg", "max"), *, hidden: Any = None, bias: bool = True,
                 bn: bool = False, bn_momentum: float | None = 0.1, shared: bool = True,
                 gate: str = "sigmoid", pool_terms: str = "each") -> None:
        super().__init__()
        self.gate_channels = checked_int(gate_channels, "gate_channels", "CBAM")
        if hidden is None:
            reduction_ratio = checked_int(reduction_ratio, "reduction_ratio", "CBAM")
            width = self.gate_channels // reduction_ratio  # floor division, as the released code
            if width == 0:
                raise ValueError(
                    f"CBAM: gate_channels={self.gate_channels} // reduction_ratio={reduction_ratio} "
                    f"is 0: the MLP would have no hidden unit"
                )
            hidden = (width,)
        hidden = tuple(checked_int(h, "hidden", "CBAM") for h in hidden)
        self.pool_types = _check_pool_types(pool_types)
        self.gate = _choice(gate, "gate", GATES)
        self.pool_terms = _choice(pool_terms, "pool_terms", ("each", "first-twice"))
        self.shared = flag(shared, "shared", "CBAM")
        self.mlp = channel_mlp(self.gate_channels, hidden, bias, bn, bn_momentum)
        for i in range(1, 1 if self.shared else len(self.pool_types)):
            self.add_module(f"mlp{i}", channel_mlp(self.gate_channels, hidden, bias, bn, bn_momentum))

    def channel_map(self, x: Tensor) -> Tensor:
        """M_c as (N, C, 1, 1), after the gate (the sigmoid)."""
        check_input(x, self.gate_channels, "CBAM", "gate_channels")
        raws = []
        for i, pool in enumerate(self.pool_types):
            mlp = self.mlp if self.shared or i == 0 else getattr(self, f"mlp{i}")
            raws.append(mlp(POOLS[pool](x)))
        if self.pool_terms == "first-twice":
            raws = [raws[0], raws[0]]
        logits = raws[0]
        for raw in raws[1:]:
            logits = logits + raw
        return _gate_fn(self.gate)(logits).reshape(x.shape[0], x.shape[1], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.gate(x, self.channel_map(x))

    def extra_repr(self) -> str:
        return f"pool_types={self.pool_types}"


class ChannelPool(Module):
    """(N, C, H, W) -> (N, 2, H, W): max, then mean, over the channels (``F.channel_pool``);
    ``order=("avg", "max")`` stacks them the other way, as the paper writes it."""

    def __init__(self, order: Sequence[str] = ("max", "avg")) -> None:
        super().__init__()
        if tuple(order) not in (("max", "avg"), ("avg", "max")):
            raise ValueError(f"CBAM: spatial_pools must be ('max', 'avg') or ('avg', 'max'), got {order!r}")
        self.order = tuple(order)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.channel_pool(x)
        return pooled if self.order == ("max", "avg") else pooled[:, ::-1]


class CBAMSpatialGate(Module):
    """F'' = F' * M_s(F'), M_s = sigmoid(BN(conv7x7(channel_pool(F')))).

    ``compress`` (no parameters), then ``spatial``: ``conv`` Conv2d(2, 1, 7, padding=3,
    bias=False) and ``bn`` BatchNorm2d(1, momentum=0.01), as the released code. Keyword-only
    options: ``pools`` (the order of the stacked maps), ``kernel_size``, ``bias``, ``bn``,
    ``bn_momentum``, ``gate`` ("identity": no sigmoid, a port mistake).
    """

    def __init__(self, *, pools: Sequence[str] = ("max", "avg"), kernel_size: int = SPATIAL_KERNEL,
                 bias: bool = False, bn: bool = True, bn_momentum: float | None = SPATIAL_BN_MOMENTUM,
                 gate: str = "sigmoid") -> None:
        super().__init__()
        kernel_size = checked_int(kernel_size, "kernel_size", "CBAM")
        if kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size must be odd (the map keeps its size), got {kernel_size}")
        self.gate = _choice(gate, "spatial_gate", GATES)
        self.compress = ChannelPool(pools)
        self.spatial = Sequential()
        self.spatial.add_module("conv", Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias))
        if bn:
            self.spatial.add_module("bn", BatchNorm2d(1, momentum=bn_momentum))

    def spatial_map(self, x: Tensor) -> Tensor:
        """M_s as (N, 1, H, W), after the gate (the sigmoid)."""
        return _gate_fn(self.gate)(self.spatial(self.compress(x)))

    def forward(self, x: Tensor) -> Tensor:
        return F.gate(x, self.spatial_map(x))


class CBAM(Module):
    """F'' = M_s(F') * F',  F' = M_c(F) * F: the channel gate, then the spatial gate
    (left out with ``no_spatial=True``). See the module docstring.

    Keyword-only options describe the layouts found in ports (``minibam.verify`` builds
    a CBAM of the structure it reads): ``hidden``, ``mlp_bias``, ``mlp_bn``,
    ``mlp_bn_momentum`` for the MLP; ``spatial_pools`` (("max", "avg") as released, or
    ("avg", "max") as the paper), ``kernel_size``, ``spatial_bias``, ``spatial_bn``,
    ``spatial_bn_momentum``; ``spatial_input`` ("refined": the spatial gate reads F', as
    the paper; "input": it reads F); ``residual`` (``True``: returns F + F''); and the
    port mistakes ``shared_mlp=False``, ``channel_gate``/``spatial_gate="identity"``,
    ``pool_terms="first-twice"``.
    """

    def __init__(self, gate_channels: int, reduction_ratio: int = 16,
                 pool_types: Sequence[str] = ("avg", "max"), no_spatial: bool = False, *,
                 hidden: Any = None, mlp_bias: bool = True, mlp_bn: bool = False,
                 mlp_bn_momentum: float | None = 0.1, shared_mlp: bool = True,
                 channel_gate: str = "sigmoid", pool_terms: str = "each",
                 spatial_pools: Sequence[str] = ("max", "avg"), kernel_size: int = SPATIAL_KERNEL,
                 spatial_bias: bool = False, spatial_bn: bool = True,
                 spatial_bn_momentum: float | None = SPATIAL_BN_MOMENTUM, spatial_gate: str = "sigmoid",
                 spatial_input: str = "refined", residual: bool = False) -> None:
        super().__init__()
        self.ChannelGate = CBAMChannelGate(gate_channels, reduction_ratio, pool_types, hidden=hidden,
                                           bias=mlp_bias, bn=mlp_bn, bn_momentum=mlp_bn_momentum,
                                           shared=shared_mlp, gate=channel_gate, pool_terms=pool_terms)
        self.gate_channels = self.ChannelGate.gate_channels
        self.reduction_ratio = int(reduction_ratio)
        self.pool_types = self.ChannelGate.pool_types
        self.no_spatial = flag(no_spatial, "no_spatial", "CBAM")
        self.spatial_input = _choice(spatial_input, "spatial_input", SPATIAL_INPUTS)
        self.residual = flag(residual, "residual", "CBAM")
        self.spatial_bn = flag(spatial_bn, "spatial_bn", "CBAM")
        if not self.no_spatial:
            self.SpatialGate = CBAMSpatialGate(pools=spatial_pools, kernel_size=kernel_size, bias=spatial_bias,
                                               bn=self.spatial_bn, bn_momentum=spatial_bn_momentum,
                                               gate=spatial_gate)

    def _check(self, x: Any) -> Tensor:
        check_input(x, self.gate_channels, "CBAM", "gate_channels")
        n, _, h, w = x.shape
        if self.training and not self.no_spatial and self.spatial_bn and n * h * w == 1:
            raise ValueError(
                f"CBAM: the spatial gate's batch norm has one value per channel for input "
                f"shape {x.shape} in training mode (batch statistics are undefined); use more "
                f"than one sample or pixel, or call .eval()"
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        refined = self.ChannelGate(x)
        y = refined
        if not self.no_spatial:
            read = refined if self.spatial_input == "refined" else x
            y = F.gate(refined, self.SpatialGate.spatial_map(read))
        return x + y if self.residual else y

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
                    read = x * mc if self.spatial_input == "refined" else x
                    ms = self.SpatialGate.spatial_map(read).data
        finally:
            self.load_state_dict(buffers, strict=False)
        mc = mc.data
        return {"channel": mc[:, :, 0, 0].copy(), "spatial": ms[:, 0].copy(), "attention": mc * ms}

    def extra_repr(self) -> str:
        return f"pool_types={self.pool_types}, no_spatial={self.no_spatial}"
