"""CBAM's rows of ``minibam check``: its pooling and gating ops, and the whole module with random weights.

`random_cbam` is what ``check`` (and ``bench``) start from: PyTorch's default
initialisation from a seed, and random affine parameters and running statistics for the
spatial gate's BatchNorm, so that eval mode is not the identity normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minibam import functional as F
from minibam.checks.bam import buffer_arrays
from minibam.checks.catalogue import n, op, shape_text
from minibam.checks.runner import Case, Probe
from minibam.nn import CBAM, BatchNorm2d
from minibam.random import manual_seed
from minibam.tensor import Tensor


def random_cbam(gate_channels: int, reduction_ratio: int = 16,
                pool_types: Sequence[str] = ("avg", "max"), no_spatial: bool = False,
                seed: int = 0, dtype: Any = np.float64) -> CBAM:
    """A CBAM in training mode whose weights and BatchNorm state depend only on ``seed``."""
    manual_seed(seed)
    cbam = CBAM(gate_channels, reduction_ratio, pool_types, no_spatial)
    rng = np.random.default_rng([seed, 1])
    for module in cbam.modules():
        if isinstance(module, BatchNorm2d):
            module.weight.data = rng.uniform(0.5, 1.5, 1)
            module.bias.data = 0.2 * rng.standard_normal(1)
            module.running_mean.data = 0.2 * rng.standard_normal(1)
            module.running_var.data = rng.uniform(0.5, 2.0, 1)
            module.num_batches_tracked = np.array(rng.integers(1, 1000), dtype=np.int64)
    return cbam.to(dtype)


@dataclass(frozen=True)
class Distinct:
    """Draws values 0.1 apart in random order: a unique maximum that a finite difference
    cannot move to another element (max pooling is not differentiable at a tie)."""

    shape: tuple[int, ...]

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        size = int(np.prod(self.shape))
        return (rng.permutation(size).reshape(self.shape) - size / 2) * 0.1 + rng.uniform(0, 0.01)


def op_cases() -> list[Case]:
    x = Distinct((2, 3, 4, 5))

    def torch_channel_pool(T: Any, t: Any) -> Any:
        return T.cat([t.max(dim=1, keepdim=True).values, t.mean(dim=1, keepdim=True)], dim=1)

    return [
        op("global_max_pool2d", F.global_max_pool2d,
           lambda T, t: T.nn.functional.max_pool2d(t, t.shape[2:]).flatten(1), "H != W", x=x),
        op("global_lp_pool2d", F.global_lp_pool2d,
           lambda T, t: T.nn.functional.lp_pool2d(t, 2, t.shape[2:]).flatten(1), "p=2", x=x),
        op("global_lse_pool2d", F.global_lse_pool2d, lambda T, t: T.logsumexp(t, dim=(2, 3)), x=x),
        op("channel_max_pool", F.channel_max_pool, lambda T, t: t.max(dim=1, keepdim=True).values,
           x=x),
        op("channel_avg_pool", F.channel_avg_pool, lambda T, t: t.mean(dim=1, keepdim=True), x=x),
        op("channel_pool", F.channel_pool, torch_channel_pool, "[max; mean]", x=x),
        op("gate", F.gate, lambda T, t, g: t * g, "channel gate", x=n(2, 3, 4, 5), g=n(2, 3, 1, 1)),
        op("gate", F.gate, lambda T, t, g: t * g, "spatial gate", x=n(2, 3, 4, 5), g=n(2, 1, 4, 5)),
    ]


def cbam_case(x_shape: tuple[int, int, int, int], pool_types: Sequence[str] = ("avg", "max"),
              reduction_ratio: int = 4, no_spatial: bool = False, training: bool = True) -> Case:
    """The whole module: gradients for x and every parameter, buffers restored before
    each evaluation so that the finite differences all see the same module."""
    config = (x_shape[1], reduction_ratio, tuple(pool_types), no_spatial)

    def draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"seed": np.array(rng.integers(2**31)), "x": rng.standard_normal(x_shape)}

    def build(inputs: dict[str, np.ndarray]) -> CBAM:
        return random_cbam(*config, seed=int(inputs["seed"])).train(training)

    def minibam_probe(inputs: dict[str, np.ndarray]) -> Probe:
        cbam = build(inputs)
        names = {name for name, _ in cbam.named_parameters()}
        initial = {k: v for k, v in cbam.state_dict().items() if k not in names}
        x = Tensor(inputs["x"], requires_grad=True)

        def run() -> Tensor:
            cbam.load_state_dict(initial, strict=False)
            return cbam(x)

        return Probe({"x": x, **dict(cbam.named_parameters())}, run, lambda: buffer_arrays(cbam))

    def torch_probe(torch: Any, inputs: dict[str, np.ndarray]) -> Probe:
        from minibam.torch_oracle import cbam_like, numpy_state

        model = cbam_like(build(inputs))
        x = torch.tensor(inputs["x"], requires_grad=True)
        return Probe({"x": x, **dict(model.named_parameters())}, lambda: model(x),
                     lambda: numpy_state(model, buffers_only=True))

    count = sum(p.data.size for p in CBAM(*config).parameters())
    shapes = (f"x {shape_text(x_shape)}, C/r={x_shape[1] // reduction_ratio}, "
              f"{'+'.join(pool_types)}{', no spatial' if no_spatial else ''}, {count} weights; "
              f"{'train' if training else 'eval'}")
    return Case("CBAM", shapes, draw, minibam_probe, torch_probe)


def cbam_cases(thorough: bool = False) -> list[Case]:
    # Hidden widths of 4 and 8: with only one or two hidden ReLUs, a pool's whole MLP path
    # is often switched off, and a wrong backward of that pool would go unseen.
    cases = op_cases() + [
        cbam_case((3, 8, 6, 5), ("avg", "max"), reduction_ratio=2),
        cbam_case((3, 16, 3, 5), ("avg", "max", "lp", "lse"), reduction_ratio=2, training=False),
    ]
    if thorough:
        cases += [
            cbam_case((3, 8, 5, 5), ("avg", "max"), training=False),
            cbam_case((2, 6, 3, 8), ("max",), reduction_ratio=3),
            cbam_case((2, 4, 5, 4), ("lp", "lse"), reduction_ratio=2),
            cbam_case((3, 8, 4, 6), ("avg", "max"), no_spatial=True),
            cbam_case((1, 16, 4, 3), ("avg", "max"), reduction_ratio=16),
        ]
    return cases
