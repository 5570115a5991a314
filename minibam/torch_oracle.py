"""PyTorch as an independent oracle: the attention modules' twins in ``torch.nn``.

Imported only where the PyTorch side is asked for, and only once torch is known to be
installed: the command line's `load` (``minibam check``), each module's
``Description.twin`` in `minibam.modules` (the self-check's PyTorch rows), and
`minibam.bench` (the torch side of a benchmark). ``import minibam`` never imports
torch. `TorchBAM` is BAM written directly with ``torch.nn`` layers, under the same
child names as `minibam.nn.BAM`, so that a minibam ``state_dict()`` loads into it
unchanged and both run on the same weights; `TorchCBAM` does the same for
`minibam.nn.CBAM`, and `holding` puts any minibam module's state, mode and dtype into
its twin.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn


def load() -> Any:
    """The ``torch`` module (this file imported it, so it is installed)."""
    return torch


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, hidden: int, variant: str) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["flatten"] = nn.Flatten()
        layers["gate_c_fc_0"] = nn.Linear(channels, hidden)
        layers["gate_c_bn_1"] = nn.BatchNorm1d(hidden)
        layers["gate_c_relu_1"] = nn.ReLU()
        layers["gate_c_fc_final"] = nn.Linear(hidden, channels)
        if variant == "paper":
            layers["gate_c_bn_final"] = nn.BatchNorm1d(channels)
        self.gate_c = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A true global average over H and W (the released code pools an H x H window).
        return self.gate_c(x.mean(dim=(2, 3)))[:, :, None, None]


class _SpatialGate(nn.Module):
    def __init__(self, channels: int, hidden: int, dilation_conv_num: int, dilation_val: int,
                 variant: str) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["gate_s_conv_reduce0"] = nn.Conv2d(channels, hidden, kernel_size=1)
        layers["gate_s_bn_reduce0"] = nn.BatchNorm2d(hidden)
        layers["gate_s_relu_reduce0"] = nn.ReLU()
        for i in range(dilation_conv_num):
            layers[f"gate_s_conv_di_{i}"] = nn.Conv2d(
                hidden, hidden, kernel_size=3, padding=dilation_val, dilation=dilation_val
            )
            layers[f"gate_s_bn_di_{i}"] = nn.BatchNorm2d(hidden)
            layers[f"gate_s_relu_di_{i}"] = nn.ReLU()
        layers["gate_s_conv_final"] = nn.Conv2d(hidden, 1, kernel_size=1)
        if variant == "paper":
            layers["gate_s_bn_final"] = nn.BatchNorm2d(1)
        self.gate_s = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x)


class TorchBAM(nn.Module):
    """y = x * (1 + sigmoid(M_c + M_s)) ("paper") or x * (1 + sigmoid(M_c * M_s)) ("official")."""

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
                 dilation_val: int = 4, variant: str = "paper") -> None:
        super().__init__()
        hidden = gate_channel // reduction_ratio
        self.variant = variant
        self.channel_att = _ChannelGate(gate_channel, hidden, variant)
        self.spatial_att = _SpatialGate(gate_channel, hidden, dilation_conv_num, dilation_val, variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc = self.channel_att(x)
        ms = self.spatial_att(x)
        a = mc + ms if self.variant == "paper" else mc * ms
        return x * (1 + torch.sigmoid(a))


def holding(model: nn.Module, module: Any, state: Mapping[str, np.ndarray] | None = None) -> nn.Module:
    """``model`` (a torch twin) with the minibam ``module``'s dtype and mode, holding
    ``state`` (default: ``module.state_dict()``); returns ``model``."""
    state = module.state_dict() if state is None else state
    dtype = torch.float32 if next(iter(module.parameters())).dtype == np.float32 else torch.float64
    model.to(dtype)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    model.train(module.training)
    return model


def bam_like(bam: Any, state: Mapping[str, np.ndarray] | None = None) -> TorchBAM:
    """A TorchBAM with ``bam``'s configuration, mode and dtype, holding ``state``
    (default: ``bam.state_dict()``)."""
    model = TorchBAM(bam.gate_channel, bam.reduction_ratio, bam.dilation_conv_num,
                     bam.dilation_val, bam.variant)
    return holding(model, bam, state)


class TorchBAMNet(nn.Module):
    """``minibam.nn.BAMNet`` in torch.nn, child for child (same ``state_dict()`` keys)."""

    def __init__(self, children: Mapping[str, nn.Module]) -> None:
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            if name == "head":
                x = module(x.mean(dim=(2, 3)))
            else:
                x = module(x)
        return x


def bamnet_like(net: Any) -> TorchBAMNet:
    """A TorchBAMNet with the layers, weights, mode and dtype of the minibam ``net``."""
    from minibam import nn as mnn  # the minibam side, NumPy only

    children: OrderedDict[str, nn.Module] = OrderedDict()
    for name, child in net.named_children():
        if isinstance(child, mnn.BAM):
            children[name] = TorchBAM(child.gate_channel, child.reduction_ratio, child.dilation_conv_num,
                                      child.dilation_val, child.variant)
        elif isinstance(child, mnn.Linear):
            children[name] = nn.Linear(child.weight.shape[1], child.weight.shape[0])
        else:  # a conv-bn-relu stage
            conv = child[0]
            children[name] = nn.Sequential(
                nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, bias=conv.bias is not None),
                nn.BatchNorm2d(conv.out_channels), nn.ReLU())
    return holding(TorchBAMNet(children), net)


def numpy_state(model: nn.Module, buffers_only: bool = False) -> dict[str, np.ndarray]:
    """``model``'s buffers (and parameters unless ``buffers_only``) as NumPy copies."""
    items = model.named_buffers() if buffers_only else model.state_dict().items()
    return {k: v.detach().cpu().numpy().copy() for k, v in items}


class _CBAMChannelGate(nn.Module):
    POOLS = {
        "avg": lambda x: x.mean(dim=(2, 3)),
        "max": lambda x: x.flatten(2).max(dim=2).values,
        "lp": lambda x: x.pow(2).sum(dim=(2, 3)).sqrt(),
        "lse": lambda x: x.flatten(2).logsumexp(dim=2),
    }

    def __init__(self, channels: int, hidden: int, pool_types: tuple[str, ...]) -> None:
        super().__init__()
        self.pool_types = pool_types
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = sum(self.mlp(self.POOLS[kind](x)) for kind in self.pool_types)
        return x * torch.sigmoid(logits)[:, :, None, None]


class _CBAMSpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)
        layers["bn"] = nn.BatchNorm2d(1, momentum=0.01)
        self.spatial = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class TorchCBAM(nn.Module):
    """CBAM under the released code's child names: the channel gate, then the spatial gate."""

    def __init__(self, gate_channels: int, reduction_ratio: int = 16,
                 pool_types: tuple[str, ...] = ("avg", "max"), no_spatial: bool = False) -> None:
        super().__init__()
        self.ChannelGate = _CBAMChannelGate(gate_channels, gate_channels // reduction_ratio,
                                            tuple(pool_types))
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = _CBAMSpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ChannelGate(x)
        return x if self.no_spatial else self.SpatialGate(x)


def cbam_like(cbam: Any, state: Mapping[str, np.ndarray] | None = None) -> TorchCBAM:
    """A TorchCBAM with ``cbam``'s configuration, mode and dtype, holding ``state``
    (default: ``cbam.state_dict()``)."""
    model = TorchCBAM(cbam.gate_channels, cbam.reduction_ratio, cbam.pool_types, cbam.no_spatial)
    return holding(model, cbam, state)
