"""CBAM in plain PyTorch: the oracle that minibam's CBAM (autograd and by hand) is checked against.

Written from the paper (Woo et al., ECCV 2018, section 3) and the API contract, not from
minibam, so that the two can disagree. Parameter names are those of the authors'
released code (``ChannelGate.mlp.1``, ``ChannelGate.mlp.3``, ``SpatialGate.spatial.conv``,
``SpatialGate.spatial.bn`` with momentum 0.01, no conv bias), so that ``state_dict()``
keys equal ``minibam.nn.CBAM``'s. Every pool covers the whole H x W plane.

    params = random_params(gate_channels=8, reduction_ratio=2, rng=0)
    ref = run_reference(params, x, dy, pool_types=("avg", "max"), training=True)
    ref["y"], ref["dx"], ref["grads"][name], ref["running"][name]      # float64 NumPy arrays
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn


def plane_pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, C) summary of each channel over the whole plane."""
    if kind == "avg":
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
    if kind == "max":
        return nn.functional.adaptive_max_pool2d(x, 1).flatten(1)
    if kind == "lp":  # the L2 norm of the plane: lp_pool2d with p = 2 and the plane as window
        return nn.functional.lp_pool2d(x, 2, kernel_size=tuple(x.shape[2:])).flatten(1)
    if kind == "lse":
        return torch.logsumexp(x.flatten(2), dim=2)
    raise ValueError(f"unknown pool {kind!r}")


class ChannelGate(nn.Module):
    """x * sigmoid(sum_k MLP(pool_k(x))), with one MLP shared by every pool."""

    def __init__(self, channels: int, reduction_ratio: int, pool_types: tuple[str, ...]) -> None:
        super().__init__()
        hidden = channels // reduction_ratio
        self.pool_types = tuple(pool_types)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = sum(self.mlp(plane_pool(x, kind)) for kind in self.pool_types)
        return x * torch.sigmoid(logits)[:, :, None, None]


class SpatialGate(nn.Module):
    """x * sigmoid(BN(conv7x7([max_c x; mean_c x])))."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False),
            bn=nn.BatchNorm2d(1, momentum=0.01),
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)  # (N, 2, H, W)
        return x * torch.sigmoid(self.spatial(pooled))


class TorchCBAM(nn.Module):
    """The channel gate, then (unless ``no_spatial``) the spatial gate, in sequence."""

    def __init__(self, gate_channels: int, reduction_ratio: int = 16,
                 pool_types: tuple[str, ...] = ("avg", "max"), no_spatial: bool = False) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio, pool_types)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ChannelGate(x)
        return x if self.no_spatial else self.SpatialGate(x)


def random_params(gate_channels: int, reduction_ratio: int, no_spatial: bool = False,
                  rng: np.random.Generator | int | None = None) -> dict[str, np.ndarray]:
    """A full random state_dict as float64 NumPy arrays (num_batches_tracked: int64, 0-d).

    Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.5^2); the batch norm's weight in [0.5, 1.5],
    bias, running mean ~ N(0, 0.5^2), running variance in [0.5, 2], so that eval mode is
    not the identity normalisation.
    """
    rng = np.random.default_rng(rng)
    with torch.device("meta"):  # shapes only
        shapes = TorchCBAM(gate_channels, reduction_ratio, no_spatial=no_spatial).state_dict()
    params: dict[str, np.ndarray] = {}
    for name, tensor in shapes.items():
        shape, leaf = tuple(tensor.shape), name.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            params[name] = np.array(rng.integers(0, 100), dtype=np.int64)
        elif leaf == "running_var":
            params[name] = rng.uniform(0.5, 2.0, shape)
        elif leaf == "weight" and ".bn." in name:
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif leaf == "weight":
            params[name] = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        else:
            params[name] = rng.normal(0.0, 0.5, shape)
    return params


def run_reference(params: dict[str, np.ndarray], x: np.ndarray, dy: np.ndarray,
                  pool_types: tuple[str, ...] = ("avg", "max"), training: bool = True) -> dict:
    """One forward and backward pass of TorchCBAM in float64 from ``params`` (unchanged).

    Returns ``{"y", "dx", "grads": {parameter: grad}, "running": {buffer: value after}}``.
    """
    hidden, channels = np.shape(params["ChannelGate.mlp.1.weight"])
    no_spatial = "SpatialGate.spatial.conv.weight" not in params
    module = TorchCBAM(channels, channels // hidden, tuple(pool_types), no_spatial).double()
    module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in params.items()})
    module.train(training)
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # test-sized tensors: one thread is much faster on shared cores
    try:
        y = module(xt)
        y.backward(torch.as_tensor(np.asarray(dy, dtype=np.float64)))
    finally:
        torch.set_num_threads(threads)
    return {
        "y": y.detach().numpy(),
        "dx": xt.grad.numpy(),
        "grads": {name: p.grad.numpy() for name, p in module.named_parameters()},
        "running": {name: b.numpy() for name, b in module.named_buffers()},
    }


# ----------------------------------------------------------------------------------------
# Ports with the mistakes seen in the wild, for verify.cbam to name (each a TorchCBAM with
# one thing changed; written here, from the descriptions of those mistakes).
# ----------------------------------------------------------------------------------------


class NoSigmoidChannelGate(ChannelGate):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = sum(self.mlp(plane_pool(x, kind)) for kind in self.pool_types)
        return x * logits[:, :, None, None]


class AvgTwiceChannelGate(ChannelGate):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.mlp(plane_pool(x, "avg"))
        x2 = self.mlp(plane_pool(x, "max"))  # noqa: F841  (computed, then the copy-paste drops it)
        return x * torch.sigmoid(x1 + x1)[:, :, None, None]


class UnsharedChannelGate(nn.Module):
    def __init__(self, channels: int, reduction_ratio: int, pool_types: tuple[str, ...]) -> None:
        super().__init__()
        hidden = channels // reduction_ratio
        self.pool_types = tuple(pool_types)
        self.mlps = nn.ModuleDict({kind: nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(),
                                                       nn.Linear(hidden, channels)) for kind in pool_types})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = sum(self.mlps[kind](plane_pool(x, kind)) for kind in self.pool_types)
        return x * torch.sigmoid(logits)[:, :, None, None]


class FixedWindowChannelGate(ChannelGate):
    """Pools with windows fixed at construction (nn.AvgPool2d / nn.MaxPool2d of the size
    the port was written for): the flattened result has C entries only at that size."""

    def __init__(self, channels: int, reduction_ratio: int, pool_types: tuple[str, ...], size: int = 8) -> None:
        super().__init__(channels, reduction_ratio, pool_types)
        self.avg_pool, self.max_pool = nn.AvgPool2d(size), nn.MaxPool2d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x))
        return x * torch.sigmoid(logits)[:, :, None, None]


class NoSigmoidSpatialGate(SpatialGate):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)
        return x * self.spatial(pooled)


def cbam_with_bug(bug: str, channels: int = 16, reduction_ratio: int = 4) -> TorchCBAM:
    """A TorchCBAM with one port mistake: "missing-sigmoid", "missing-spatial-sigmoid",
    "avg-twice", "unshared-mlp", "non-adaptive-pool", "no-relu", "momentum-0.1"."""
    model = TorchCBAM(channels, reduction_ratio)
    pools = ("avg", "max")
    gates = {"missing-sigmoid": NoSigmoidChannelGate, "avg-twice": AvgTwiceChannelGate,
             "unshared-mlp": UnsharedChannelGate, "non-adaptive-pool": FixedWindowChannelGate}
    if bug in gates:
        model.ChannelGate = gates[bug](channels, reduction_ratio, pools)
    elif bug == "missing-spatial-sigmoid":
        model.SpatialGate = NoSigmoidSpatialGate()
    elif bug == "no-relu":
        model.ChannelGate.mlp[2] = nn.Identity()
    elif bug == "momentum-0.1":
        model.SpatialGate.spatial.bn.momentum = 0.1
    else:
        raise ValueError(f"unknown bug {bug!r}")
    return model


class RenamedCBAM(nn.Module):
    """The released function under other names, as a port might write it."""

    def __init__(self, channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction_ratio
        self.fc1, self.fc2 = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.norm = nn.BatchNorm2d(1, momentum=0.01)
        self.pool_types = ("avg", "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def mlp(p: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(p)))

        x = x * torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[:, :, None, None]
        pooled = torch.cat([x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.norm(self.conv(pooled)))
