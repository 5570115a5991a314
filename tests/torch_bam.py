"""BAM in plain PyTorch: the oracle that minibam's BAM (autograd and by hand) is checked against.

Written from the paper and the API contract, not from minibam, so that the two can disagree.
Child names are those of the authors' reference code, so ``state_dict()`` keys equal
``minibam.nn.BAM``'s; both variants are offered, and the channel branch pools with a true
global average (the reference code pools an H x H window when W != H).

    params = random_params(gate_channel=8, reduction_ratio=2, dilation_conv_num=2, rng=0)
    module = load_params(TorchBAM(8, 2, 2, dilation_val=4), params)
    ref = run_reference(params, x, dy, variant="paper", training=True, dilation_val=4)
    ref["y"], ref["dx"], ref["grads"][name], ref["running"][name]      # float64 NumPy arrays
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ChannelGate(nn.Module):
    """M_c(F) = BN(W1 ReLU(BN(W0 AvgPool(F) + b0)) + b1); the closing BN only in the paper variant."""

    def __init__(self, gate_channel: int, reduction_ratio: int, variant: str) -> None:
        super().__init__()
        hidden = gate_channel // reduction_ratio
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", nn.Flatten())
        self.gate_c.add_module("gate_c_fc_0", nn.Linear(gate_channel, hidden))
        self.gate_c.add_module("gate_c_bn_1", nn.BatchNorm1d(hidden))
        self.gate_c.add_module("gate_c_relu_1", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(hidden, gate_channel))
        if variant == "paper":
            self.gate_c.add_module("gate_c_bn_final", nn.BatchNorm1d(gate_channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C)."""
        return self.gate_c(x.mean(dim=(2, 3), keepdim=True))


class SpatialGate(nn.Module):
    """M_s(F) = BN(f_final(ReLU(BN(f_i(... ReLU(BN(f_0(F)))))))); closing BN only in the paper variant."""

    def __init__(
        self, gate_channel: int, reduction_ratio: int, dilation_conv_num: int,
        dilation_val: int, variant: str,
    ) -> None:
        super().__init__()
        hidden = gate_channel // reduction_ratio
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(gate_channel, hidden, kernel_size=1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_module(
                f"gate_s_conv_di_{i}",
                nn.Conv2d(hidden, hidden, kernel_size=3, padding=dilation_val, dilation=dilation_val),
            )
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, kernel_size=1))
        if variant == "paper":
            self.gate_s.add_module("gate_s_bn_final", nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H, W)."""
        return self.gate_s(x)


class TorchBAM(nn.Module):
    """y = x * (1 + sigmoid(M_c + M_s)) (paper) or x * (1 + sigmoid(M_c * M_s)) (official)."""

    def __init__(
        self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
        dilation_val: int = 4, variant: str = "paper",
    ) -> None:
        super().__init__()
        if variant not in ("paper", "official"):
            raise ValueError(f"variant must be 'paper' or 'official', got {variant!r}")
        if gate_channel % reduction_ratio:
            raise ValueError(f"gate_channel {gate_channel} not divisible by {reduction_ratio}")
        self.variant = variant
        self.channel_att = ChannelGate(gate_channel, reduction_ratio, variant)
        self.spatial_att = SpatialGate(
            gate_channel, reduction_ratio, dilation_conv_num, dilation_val, variant
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        M_c = self.channel_att(x)[:, :, None, None]  # (N, C, 1, 1)
        M_s = self.spatial_att(x)  # (N, 1, H, W)
        s = M_c + M_s if self.variant == "paper" else M_c * M_s
        return x * (1 + torch.sigmoid(s))


def random_params(
    gate_channel: int,
    reduction_ratio: int,
    dilation_conv_num: int,
    variant: str = "paper",
    rng: np.random.Generator | int | None = None,
) -> dict[str, np.ndarray]:
    """A full random state_dict as float64 NumPy arrays (num_batches_tracked: int64, 0-d).

    Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.5^2); batch-norm affine weights in
    [0.5, 1.5] and biases ~ N(0, 0.5^2); running means ~ N(0, 0.5^2), running variances
    in [0.5, 2], so that eval mode is not the identity normalisation.
    """
    rng = np.random.default_rng(rng)
    with torch.device("meta"):  # shapes only: no memory, no draw from torch's global RNG
        shapes = TorchBAM(gate_channel, reduction_ratio, dilation_conv_num, 1, variant).state_dict()
    params: dict[str, np.ndarray] = {}
    for name, tensor in shapes.items():
        shape, is_bn = tuple(tensor.shape), "_bn_" in name
        leaf = name.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            value = np.array(rng.integers(0, 100), dtype=np.int64)
        elif leaf == "running_var":
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "weight" and is_bn:
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "weight":
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        else:  # bias, running_mean
            value = rng.normal(0.0, 0.5, shape)
        params[name] = value
    return params


def load_params(module: TorchBAM, params: dict[str, np.ndarray]) -> TorchBAM:
    """Load NumPy arrays into ``module`` (strict), in float64; returns the module."""
    module.double()
    module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in params.items()}, strict=True)
    return module


def run_reference(
    params: dict[str, np.ndarray],
    x: np.ndarray,
    dy: np.ndarray,
    variant: str = "paper",
    training: bool = True,
    dilation_val: int = 4,
) -> dict:
    """One forward and backward pass of TorchBAM in float64, from ``params`` (left unchanged).

    Returns ``{"y", "dx", "grads": {parameter name: grad}, "running": {buffer name: value
    after the pass}}``, all NumPy arrays.
    """
    hidden, gate_channel = np.shape(params["channel_att.gate_c.gate_c_fc_0.weight"])
    n = sum(name.endswith(".weight") and "gate_s_conv_di_" in name for name in params)
    module = TorchBAM(gate_channel, gate_channel // hidden, n, dilation_val, variant)
    load_params(module, params)
    module.train(training)
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    # Test-sized tensors: one thread is ~20x faster than several fighting over shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
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


# ----------------------------------------------------------- variants and seeded bugs
# What verify.bam must recognise, written here in plain PyTorch (not from minibam).


class ReleasedChannelGate(ChannelGate):
    """The released code's pooling: avg_pool2d with an H x H kernel and stride H, so a
    non-square map contributes only its top-left H x H window (and W >= 2H crashes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool2d(x, x.size(2), stride=x.size(2))
        return self.gate_c(pooled)


class ReleasedBAM(TorchBAM):
    """The authors' released BAM as published: product, no closing BN, H x H pooling."""

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
                 dilation_val: int = 4) -> None:
        super().__init__(gate_channel, reduction_ratio, dilation_conv_num, dilation_val, "official")
        released = ReleasedChannelGate(gate_channel, reduction_ratio, "official")
        released.load_state_dict(self.channel_att.state_dict())
        self.channel_att = released


class SumNoBnBAM(TorchBAM):
    """A port's form: the paper's sum on the released code's layers (no closing BN)."""

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 3,
                 dilation_val: int = 2) -> None:
        super().__init__(gate_channel, reduction_ratio, dilation_conv_num, dilation_val, "official")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + torch.sigmoid(self.channel_att(x)[:, :, None, None] + self.spatial_att(x)))


class NoSigmoidBAM(TorchBAM):
    """Bug: the sigmoid of the combined map is missing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc, ms = self.channel_att(x)[:, :, None, None], self.spatial_att(x)
        return x * (1 + (mc + ms if self.variant == "paper" else mc * ms))


def with_bug(model: TorchBAM, bug: str) -> TorchBAM:
    """Seed one copy-paste bug into ``model`` (in place) and return it."""
    if bug == "spatial relu forgotten":
        model.spatial_att.gate_s.gate_s_relu_reduce0 = nn.Identity()
    elif bug == "channel activation wrong":
        model.channel_att.gate_c.gate_c_relu_1 = nn.Tanh()
    else:
        raise ValueError(bug)
    return model


class RenamedBAM(nn.Module):
    """The official variant under names of its own (``mlp``, ``spatial``, ...)."""

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_val: int = 4) -> None:
        super().__init__()
        hidden = gate_channel // reduction_ratio
        self.spatial = nn.Sequential(
            nn.Conv2d(gate_channel, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation_val, dilation=dilation_val),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation_val, dilation=dilation_val),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        self.mlp = nn.Sequential(nn.Linear(gate_channel, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, gate_channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = self.spatial(x)  # spatial first: the call order differs from the authors'
        mc = self.mlp(x.mean(dim=(2, 3)))[:, :, None, None]
        return x * (1 + torch.sigmoid(mc * ms))


RENAMED_KEY_MAP = {
    "mlp.0": "channel_att.gate_c.gate_c_fc_0", "mlp.1": "channel_att.gate_c.gate_c_bn_1",
    "mlp.3": "channel_att.gate_c.gate_c_fc_final",
    "spatial.0": "spatial_att.gate_s.gate_s_conv_reduce0", "spatial.1": "spatial_att.gate_s.gate_s_bn_reduce0",
    "spatial.3": "spatial_att.gate_s.gate_s_conv_di_0", "spatial.4": "spatial_att.gate_s.gate_s_bn_di_0",
    "spatial.6": "spatial_att.gate_s.gate_s_conv_di_1", "spatial.7": "spatial_att.gate_s.gate_s_bn_di_1",
    "spatial.9": "spatial_att.gate_s.gate_s_conv_final",
}
