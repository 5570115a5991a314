"""The Bottleneck Attention Module (Park, Woo, Lee, Kweon, BMVC 2018).

    M_c(F) = BN(W_1 (ReLU(BN(W_0 GAP(F) + b_0))) + b_1)                 channel branch, (N, C)
    M_s(F) = BN(f_final(ReLU(BN(f_di(... ReLU(BN(f_reduce(F))) ...)))))  spatial branch, (N, H, W)
    Y = F * (1 + sigmoid(M_c (+) M_s))

``variant="paper"`` is the paper: each branch ends in a BatchNorm and the branches
are summed. ``variant="official"`` is the authors' released code: no closing BatchNorm,
and the branches are multiplied. Child names follow the released code, so its
``state_dict()`` keys (and checkpoints) are minibam's. See docs/bam.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam import _config
from minibam import functional as F
from minibam.nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, ReLU, checked_int
from minibam.nn.module import Module, Sequential
from minibam.ops._checks import check_fits, flag, require_tensor
from minibam.ops.attention import bam_combine
from minibam.tensor import Tensor

VARIANTS = ("paper", "official")


def _check_variant(variant: Any) -> str:
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"BAM: variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def _reduced(gate_channel: Any, reduction_ratio: Any) -> int:
    gate_channel = checked_int(gate_channel, "gate_channel", "BAM")
    reduction_ratio = checked_int(reduction_ratio, "reduction_ratio", "BAM")
    if gate_channel % reduction_ratio:
        raise ValueError(
            f"BAM: gate_channel={gate_channel} is not divisible by reduction_ratio={reduction_ratio}"
        )
    check_fits("BAM", "the channel MLP's weights", (2, gate_channel, gate_channel // reduction_ratio), 8,
               " (gate_channel x gate_channel / reduction_ratio)")
    return gate_channel // reduction_ratio


def check_input(x: Any, channels: int, who: str, argument: str = "gate_channel") -> Tensor:
    """``x`` as a 4-D tensor with ``channels`` channels, else a ``ValueError`` naming both
    numbers and the constructor ``argument`` that set them (shared by BAM and CBAM)."""
    require_tensor(x, "input", who)
    if x.ndim != 4:
        raise ValueError(f"{who}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{who}: input has {x.shape[1]} channels (shape {x.shape}) but the module "
            f"was built for {argument}={channels}"
        )
    return x


COMBINE = ("sum", "product")
POOLING = ("global", "window")


def _choice(value: Any, name: str, allowed: tuple[str, ...], who: str = "BAM") -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{who}: {name} must be one of {allowed}, got {value!r}")
    return value


def _widths(values: Any, name: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"BAM: {name} must be a sequence of layer widths, got {values!r}")
    return tuple(checked_int(v, name, "BAM") for v in values)


class ChannelGate(Module):
    """Channel attention M_c: global average pool, then the MLP C -> C/r -> C.

    ``gate_c``: flatten, gate_c_fc_0, gate_c_bn_1, gate_c_relu_1, gate_c_fc_final
    (and gate_c_bn_final in the paper variant). ``forward`` returns the map expanded
    to x's shape, as the released code does; ``channel_map`` the compact (N, C, 1, 1).

    Keyword-only options (defaults: the variant's layout) describe other layouts seen in
    ports: ``hidden`` the hidden widths (one layer per width, ``()`` for a single
    Linear(C, C)), ``bias`` and ``bn`` (a BatchNorm after each hidden layer),
    ``closing_bn``, ``bn_momentum``, and ``pooling="window"`` for the released code's
    average over the top-left H x H window only.
    """

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, num_layers: int = 1,
                 variant: str = "paper", *, hidden: Any = None, bias: bool = True, bn: bool = True,
                 closing_bn: bool | None = None, bn_momentum: float | None = 0.1,
                 pooling: str = "global") -> None:
        super().__init__()
        self.variant = _check_variant(variant)
        if hidden is None:
            num_layers = checked_int(num_layers, "num_layers", "ChannelGate")
            hidden = (_reduced(gate_channel, reduction_ratio),) * num_layers
        self.gate_channel = checked_int(gate_channel, "gate_channel", "BAM")
        self.pooling = _choice(pooling, "pooling", POOLING)
        widths = [self.gate_channel, *_widths(hidden, "hidden"), self.gate_channel]
        closing = self.variant == "paper" if closing_bn is None else flag(closing_bn, "closing_bn", "BAM")
        self.gate_c = Sequential()
        self.gate_c.add_module("flatten", Flatten())
        for i in range(len(widths) - 2):
            self.gate_c.add_module(f"gate_c_fc_{i}", Linear(widths[i], widths[i + 1], bias=bias))
            if bn:
                self.gate_c.add_module(f"gate_c_bn_{i + 1}", BatchNorm1d(widths[i + 1], momentum=bn_momentum))
            self.gate_c.add_module(f"gate_c_relu_{i + 1}", ReLU())
        self.gate_c.add_module("gate_c_fc_final", Linear(widths[-2], widths[-1], bias=bias))
        if closing:
            self.gate_c.add_module("gate_c_bn_final", BatchNorm1d(widths[-1], momentum=bn_momentum))

    def channel_map(self, x: Tensor) -> Tensor:
        """M_c as (N, C, 1, 1)."""
        check_input(x, self.gate_channel, "ChannelGate")
        h, w = x.shape[2:]
        if self.pooling == "window":  # the released code: avg_pool2d with kernel H, stride H
            if not h <= w < 2 * h:
                raise ValueError(f"ChannelGate: pooling='window' pools one H x H window and needs "
                                 f"H <= W < 2H, got a {h}x{w} map")
            x_pooled = x[:, :, :h, :h]
        else:
            x_pooled = x
        mc = self.gate_c(F.global_avg_pool2d(x_pooled))
        return mc.reshape(x.shape[0], x.shape[1], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.channel_map(x).expand(*x.shape)


class SpatialGate(Module):
    """Spatial attention M_s: 1x1 reduce, dilated 3x3 convs, 1x1 to one map.

    ``gate_s``: gate_s_conv_reduce0, gate_s_bn_reduce0, gate_s_relu_reduce0, then per
    i: gate_s_conv_di_i, gate_s_bn_di_i, gate_s_relu_di_i; then gate_s_conv_final
    (and gate_s_bn_final in the paper variant). ``forward`` returns the map expanded
    to x's shape; ``spatial_map`` the compact (N, 1, H, W).

    Keyword-only options for other layouts: ``width`` (default C/r), ``reduce_bn`` and
    ``reduce_relu`` after the 1x1 reduction, ``dilated_bn``, ``bias`` of every conv,
    ``kernel_size`` and ``padding`` of the dilated convs (default: the map keeps its size),
    ``closing_bn``, ``bn_momentum``.
    """

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
                 dilation_val: int = 4, variant: str = "paper", *, width: int | None = None,
                 reduce_bn: bool = True, reduce_relu: bool = True, dilated_bn: bool = True,
                 bias: bool = True, kernel_size: int = 3, padding: int | None = None,
                 closing_bn: bool | None = None, bn_momentum: float | None = 0.1) -> None:
        super().__init__()
        hidden = _reduced(gate_channel, reduction_ratio) if width is None else checked_int(width, "width", "BAM")
        dilation_conv_num = checked_int(dilation_conv_num, "dilation_conv_num", "BAM", minimum=0)
        dilation_val = checked_int(dilation_val, "dilation_val", "BAM")
        kernel_size = checked_int(kernel_size, "kernel_size", "BAM")
        padding = dilation_val * (kernel_size - 1) // 2 if padding is None else checked_int(padding, "padding", "BAM", 0)
        # Every dilated layer is a conv, a batch norm and a ReLU of their own: refuse a count
        # whose parameters (and about 4 kB of Python objects per layer) cannot fit.
        check_fits("BAM", "the dilated layers' parameters", (dilation_conv_num, 9 * hidden * hidden + 4 * hidden + 512),
                   8, " (dilation_conv_num x layer size)")
        self.gate_channel = int(gate_channel)
        self.variant = _check_variant(variant)
        closing = self.variant == "paper" if closing_bn is None else flag(closing_bn, "closing_bn", "BAM")
        g = Sequential()
        g.add_module("gate_s_conv_reduce0", Conv2d(gate_channel, hidden, kernel_size=1, bias=bias))
        if reduce_bn:
            g.add_module("gate_s_bn_reduce0", BatchNorm2d(hidden, momentum=bn_momentum))
        if reduce_relu:
            g.add_module("gate_s_relu_reduce0", ReLU())
        for i in range(dilation_conv_num):
            g.add_module(f"gate_s_conv_di_{i}", Conv2d(hidden, hidden, kernel_size=kernel_size, padding=padding,
                                                       dilation=dilation_val, bias=bias))
            if dilated_bn:
                g.add_module(f"gate_s_bn_di_{i}", BatchNorm2d(hidden, momentum=bn_momentum))
            g.add_module(f"gate_s_relu_di_{i}", ReLU())
        g.add_module("gate_s_conv_final", Conv2d(hidden, 1, kernel_size=1, bias=bias))
        if closing:
            g.add_module("gate_s_bn_final", BatchNorm2d(1, momentum=bn_momentum))
        self.gate_s = g

    def spatial_map(self, x: Tensor) -> Tensor:
        """M_s as (N, 1, H, W)."""
        check_input(x, self.gate_channel, "SpatialGate")
        m = self.gate_s(x)
        if m.shape[2:] != x.shape[2:]:
            raise ValueError(f"SpatialGate: the dilated convs turn a {x.shape[2]}x{x.shape[3]} map into "
                             f"{m.shape[2]}x{m.shape[3]} (kernel and padding do not keep the size)")
        return m

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial_map(x).expand(*x.shape)


class BAM(Module):
    """Y = X * (1 + sigmoid(M_c(X) (+ or *) M_s(X))); see the module docstring.

    The keyword-only options describe the layouts found in ports (``minibam.verify``
    builds a BAM of the structure it reads from a user's module): the channel MLP's
    ``hidden`` widths, ``mlp_bias``, ``mlp_bn``; the spatial branch's ``spatial_width``,
    ``reduce_bn``, ``reduce_relu``, ``dilated_bn``, ``conv_bias``, ``kernel_size``,
    ``padding``; ``closing_bn`` and ``combine`` ("sum" or "product"; default: the
    variant's), ``pooling`` ("global", or "window": the released code's H x H window),
    ``residual`` (``False``: y = x * sigmoid(...), the residual left to the caller) and
    ``bn_momentum``. The defaults are the variant's layout, with the authors' names.
    """

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
                 dilation_val: int = 4, variant: str = "paper", *, hidden: Any = None,
                 mlp_bias: bool = True, mlp_bn: bool = True, spatial_width: int | None = None,
                 reduce_bn: bool = True, reduce_relu: bool = True, dilated_bn: bool = True,
                 conv_bias: bool = True, kernel_size: int = 3, padding: int | None = None,
                 closing_bn: bool | None = None, combine: str | None = None, pooling: str = "global",
                 residual: bool = True, bn_momentum: float | None = 0.1) -> None:
        super().__init__()
        if hidden is None or spatial_width is None:
            _reduced(gate_channel, reduction_ratio)
        self.gate_channel = checked_int(gate_channel, "gate_channel", "BAM")
        self.reduction_ratio = int(reduction_ratio)
        self.dilation_conv_num = checked_int(dilation_conv_num, "dilation_conv_num", "BAM", minimum=0)
        self.dilation_val = checked_int(dilation_val, "dilation_val", "BAM")
        self.variant = _check_variant(variant)
        default = "sum" if self.variant == "paper" else "product"
        self.combine = _choice(default if combine is None else combine, "combine", COMBINE)
        self.residual = flag(residual, "residual", "BAM")
        self.channel_att = ChannelGate(gate_channel, reduction_ratio, variant=variant, hidden=hidden,
                                       bias=mlp_bias, bn=mlp_bn, closing_bn=closing_bn,
                                       bn_momentum=bn_momentum, pooling=pooling)
        self.spatial_att = SpatialGate(gate_channel, reduction_ratio, dilation_conv_num, dilation_val,
                                       variant=variant, width=spatial_width, reduce_bn=reduce_bn,
                                       reduce_relu=reduce_relu, dilated_bn=dilated_bn, bias=conv_bias,
                                       kernel_size=kernel_size, padding=padding, closing_bn=closing_bn,
                                       bn_momentum=bn_momentum)

    def _check(self, x: Any) -> Tensor:
        check_input(x, self.gate_channel, "BAM")
        if self.training and x.shape[0] < 2:
            raise ValueError(
                f"BAM: {'a batch of one' if x.shape[0] else 'an empty batch'} (input shape "
                f"{x.shape}) in training mode has no batch statistics; use a batch of at "
                f"least 2 or call .eval()"
            )
        return x

    def attention(self, mc: Tensor, ms: Tensor) -> Tensor:
        """sigmoid(M_c (+|*) M_s), (N, C, H, W), from the compact maps."""
        n, c = mc.shape[:2]
        h, w = ms.shape[2:]
        mc, ms = mc.expand(n, c, h, w), ms.expand(n, c, h, w)
        return F.sigmoid(mc + ms if self.combine == "sum" else mc * ms)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        mc = self.channel_att.channel_map(x)
        ms = self.spatial_att.spatial_map(x)
        if self.residual:  # the fused op: x * (1 + attention)
            return bam_combine(x, mc, ms, self.combine)
        return x * self.attention(mc, ms)

    def attention_maps(self, x: Tensor) -> dict[str, np.ndarray]:
        """The maps for plotting, as arrays: "channel" (N, C), "spatial" (N, H, W) and
        "attention" (N, C, H, W) = sigmoid(M_c (+|*) M_s). Records no graph and leaves
        the running statistics as they were, even in training mode."""
        self._check(x)
        # Training-mode batch norm updates the running statistics; put them back after.
        buffers = {name: np.array(b.data if isinstance(b, Tensor) else b)
                   for name, b in self.named_buffers()}
        try:
            with _config.no_grad():
                mc = self.channel_att.channel_map(x)
                ms = self.spatial_att.spatial_map(x)
                attention = self.attention(mc, ms).data
        finally:
            self.load_state_dict(buffers, strict=False)
        return {"channel": mc.data[:, :, 0, 0].copy(), "spatial": ms.data[:, 0].copy(), "attention": attention}

    def extra_repr(self) -> str:
        extra = "" if self.combine == ("sum" if self.variant == "paper" else "product") else f", combine={self.combine!r}"
        return f"variant={self.variant!r}{extra}{'' if self.residual else ', residual=False'}"
