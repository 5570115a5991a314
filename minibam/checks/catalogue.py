"""The ops ``minibam check`` verifies, each with small float64 inputs and its PyTorch twin.

Each case is ``op(name, minibam_fn, torch_fn, hyper-parameters, **arrays)``: the arrays
are the inputs differentiated, each a `Draw` (shape and distribution) that the
runner fills from the case's own seed (see ``runner``); ``minibam_fn`` takes
minibam tensors, ``torch_fn`` takes the torch module first and torch tensors. Inputs
are kept away from the points where an op is not differentiable (ReLU at 0, log and
division near 0), where finite differences would measure a kink instead of a slope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minibam import functional as F
from minibam.checks.runner import Case, Probe
from minibam.tensor import Tensor


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


_SHORT = {"weight": "w", "bias": "b", "channel_map": "M_c", "spatial_map": "M_s"}


@dataclass(frozen=True)
class Draw:
    """How one input array is drawn from a case's generator: ``kind`` is "normal"
    (``scale`` * N(0, 1) + ``shift``), "positive" (uniform in [0.5, 2]) or "nonzero"
    (normal samples pushed at least 0.2 away from 0, where ReLU has its kink)."""

    shape: tuple[int, ...]
    kind: str = "normal"
    scale: float = 1.0
    shift: float = 0.0

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "positive":
            return rng.uniform(0.5, 2.0, self.shape)
        z = rng.standard_normal(self.shape)
        if self.kind == "nonzero":
            z = np.where(z >= 0, 1.0, -1.0) * (0.2 + np.abs(z))
        return self.scale * z + self.shift


def n(*shape: int, scale: float = 1.0) -> Draw:
    return Draw(shape, scale=scale)


def positive(*shape: int) -> Draw:
    return Draw(shape, "positive")


def nonzero(*shape: int) -> Draw:
    return Draw(shape, "nonzero")


def op(name: str, fn: Callable[..., Tensor], torch_fn: Callable[..., Any], note: str = "",
       **arrays: Draw) -> Case:
    """A case differentiating ``fn(*arrays.values())`` with respect to every array."""
    shapes = ", ".join(f"{_SHORT.get(k, k)} {shape_text(a.shape)}" for k, a in arrays.items())

    def draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {k: spec(rng) for k, spec in arrays.items()}

    def minibam_probe(inputs: dict[str, np.ndarray]) -> Probe:
        leaves = {k: Tensor(a, requires_grad=True) for k, a in inputs.items()}
        return Probe(leaves, lambda: fn(*leaves.values()))

    def torch_probe(torch: Any, inputs: dict[str, np.ndarray]) -> Probe:
        leaves = {k: torch.tensor(a, requires_grad=True) for k, a in inputs.items()}
        return Probe(leaves, lambda: torch_fn(torch, *leaves.values()))

    return Case(name, f"{shapes}{'; ' + note if note else ''}", draw, minibam_probe, torch_probe)


def elementwise_cases() -> list[Case]:
    return [
        op("add", F.add, lambda T, a, b: a + b, "broadcast", a=n(3, 4), b=n(4)),
        op("sub", F.sub, lambda T, a, b: a - b, "broadcast both", a=n(3, 1), b=n(1, 4)),
        op("mul", F.mul, lambda T, a, b: a * b, "broadcast", a=n(2, 3, 4), b=n(3, 1)),
        op("div", F.div, lambda T, a, b: a / b, "broadcast", a=n(3, 4), b=positive(4)),
        op("neg", F.neg, lambda T, x: -x, x=n(3, 4)),
        op("pow", lambda x: x**3, lambda T, x: x**3, "exponent 3", x=n(3, 4)),
        op("pow", lambda x: x**-0.5, lambda T, x: x**-0.5, "exponent -0.5", x=positive(3, 4)),
        op("exp", F.exp, lambda T, x: T.exp(x), x=n(3, 4)),
        op("log", F.log, lambda T, x: T.log(x), x=positive(3, 4)),
        op("sigmoid", F.sigmoid, lambda T, x: T.sigmoid(x), x=n(3, 5, scale=4.0)),
        op("relu", F.relu, lambda T, x: T.relu(x), x=nonzero(3, 5)),
    ]


def linalg_cases() -> list[Case]:
    return [
        op("matmul", F.matmul, lambda T, a, b: a @ b, a=n(3, 4), b=n(4, 5)),
        op("matmul", F.matmul, lambda T, a, b: a @ b, "batched", a=n(2, 3, 4), b=n(4, 2)),
        op("linear", F.linear, lambda T, x, w, b: T.nn.functional.linear(x, w, b),
           x=n(4, 5), weight=n(3, 5), bias=n(3)),
    ]


def shape_cases() -> list[Case]:
    x = n(2, 3, 4)
    return [
        op("sum", lambda t: F.sum(t, axis=1), lambda T, t: t.sum(dim=1), "axis=1", x=x),
        op("sum", F.sum, lambda T, t: t.sum(), "all", x=x),
        op("mean", lambda t: F.mean(t, axis=(0, 2), keepdims=True),
           lambda T, t: t.mean(dim=(0, 2), keepdim=True), "axis=(0, 2), keepdims", x=x),
        op("reshape", lambda t: F.reshape(t, 6, 4), lambda T, t: t.reshape(6, 4), "-> 6x4", x=x),
        op("transpose", lambda t: F.transpose(t, 2, 0, 1), lambda T, t: t.permute(2, 0, 1),
           "axes (2, 0, 1)", x=x),
        op("expand", lambda t: F.expand(t, 2, 3, 4), lambda T, t: t.expand(2, 3, 4), "-> 2x3x4",
           x=n(3, 1)),
        op("slice", lambda t: t[1:, ::2, :-1], lambda T, t: t[1:, ::2, :-1], "[1:, ::2, :-1]", x=x),
        op("flatten", lambda t: F.flatten(t, 1), lambda T, t: t.flatten(1), "start_dim=1", x=x),
    ]


def loss_cases() -> list[Case]:
    targets = np.array([3, 0, 4, 1])  # fixed: only the logits are differentiated
    return [
        op("cross_entropy", lambda z: F.cross_entropy(z, targets),
           lambda T, z: T.nn.functional.cross_entropy(z, T.from_numpy(targets)), "mean over N",
           logits=n(4, 5, scale=2.0)),
    ]


def conv_case(x_shape: tuple[int, ...], out_channels: int, kernel: tuple[int, int],
              bias: bool = True, **hyper: Any) -> Case:
    """conv2d with the given stride / padding / dilation (ints or pairs)."""
    fan_in = x_shape[1] * kernel[0] * kernel[1]
    arrays = {"x": n(*x_shape), "weight": n(out_channels, x_shape[1], *kernel, scale=1 / np.sqrt(fan_in))}
    if bias:
        arrays["bias"] = n(out_channels)
    note = " ".join(f"{k[0]}={v}" for k, v in hyper.items()).replace(", ", ",") or "s=1"

    def fn(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return F.conv2d(x, w, b, **hyper)

    def torch_fn(T: Any, x: Any, w: Any, b: Any = None) -> Any:
        return T.nn.functional.conv2d(x, w, b, **hyper)

    return op("conv2d", fn, torch_fn, note, **arrays)


def conv_cases(thorough: bool) -> list[Case]:
    cases = [
        conv_case((2, 3, 6, 6), 4, (3, 3), padding=1),
        conv_case((2, 3, 7, 6), 2, (3, 3), stride=2),
        conv_case((2, 2, 7, 7), 3, (3, 3), padding=2, dilation=2),
        conv_case((2, 4, 5, 3), 3, (1, 1)),
        conv_case((2, 2, 6, 7), 2, (2, 3), bias=False, stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    ]
    if thorough:
        for stride in (1, 2, 3):
            for padding in (0, 1, 3):
                for dilation in (1, 2, 3):
                    cases.append(conv_case((2, 2, 8, 9), 3, (3, 3), stride=stride,
                                           padding=padding, dilation=dilation))
        cases.append(conv_case((3, 5, 9, 9), 4, (3, 3), padding=4, dilation=4))
        cases.append(conv_case((2, 3, 5, 5), 2, (5, 5), padding=2))
    return cases


def batch_norm_case(x_shape: tuple[int, ...], training: bool) -> Case:
    """batch_norm with fresh copies of random running buffers on every call, so that
    repeated evaluations see the same state; the buffers after one call are compared."""
    channels = x_shape[1]
    mode = "train" if training else "eval"
    shapes = f"x {shape_text(x_shape)}, w {channels}, b {channels}; {mode}"

    def draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": 2.0 * rng.standard_normal(x_shape) + 0.5, "weight": rng.uniform(0.5, 1.5, channels),
                "bias": rng.standard_normal(channels), "running_mean": 0.3 * rng.standard_normal(channels),
                "running_var": rng.uniform(0.5, 2.0, channels)}

    def minibam_probe(inputs: dict[str, np.ndarray]) -> Probe:
        leaves = {k: Tensor(inputs[k], requires_grad=True) for k in ("x", "weight", "bias")}
        state: dict[str, Tensor] = {}

        def run() -> Tensor:
            state["running_mean"], state["running_var"] = Tensor(inputs["running_mean"]), Tensor(inputs["running_var"])
            return F.batch_norm(leaves["x"], state["running_mean"], state["running_var"],
                                leaves["weight"], leaves["bias"], training=training)

        return Probe(leaves, run, lambda: {k: v.data.copy() for k, v in state.items()})

    def torch_probe(T: Any, inputs: dict[str, np.ndarray]) -> Probe:
        leaves = {k: T.tensor(inputs[k], requires_grad=True) for k in ("x", "weight", "bias")}
        state = {k: T.tensor(inputs[k]) for k in ("running_mean", "running_var")}

        def run() -> Any:
            return T.nn.functional.batch_norm(leaves["x"], state["running_mean"], state["running_var"],
                                              leaves["weight"], leaves["bias"], training=training)

        return Probe(leaves, run, lambda: {k: v.numpy().copy() for k, v in state.items()})

    return Case("batch_norm", shapes, draw, minibam_probe, torch_probe)


def norm_pool_cases(thorough: bool) -> list[Case]:
    cases = [
        batch_norm_case((6, 4), training=True),
        batch_norm_case((3, 4, 3, 5), training=True),
        batch_norm_case((3, 4, 3, 5), training=False),
        op("global_avg_pool2d", F.global_avg_pool2d, lambda T, x: x.mean(dim=(2, 3)), "H != W",
           x=n(2, 3, 4, 5)),
    ]
    if thorough:
        cases += [
            batch_norm_case((2, 3), training=True),
            batch_norm_case((6, 4), training=False),
            batch_norm_case((2, 1, 4, 4), training=True),
            batch_norm_case((4, 6, 5, 5), training=True),
            op("global_avg_pool2d", F.global_avg_pool2d, lambda T, x: x.mean(dim=(2, 3)), "1x1",
               x=n(3, 2, 1, 1)),
        ]
    return cases


@dataclass(frozen=True)
class Distinct:
    """Draws values 0.1 apart in random order: a unique maximum that a finite difference
    cannot move to another element (max pooling is not differentiable at a tie)."""

    shape: tuple[int, ...]

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        size = int(np.prod(self.shape))
        return (rng.permutation(size).reshape(self.shape) - size / 2) * 0.1 + rng.uniform(0, 0.01)


def pool_gate_cases() -> list[Case]:
    """CBAM's pools (over the plane and over the channels) and its gating product."""
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


def combine_cases() -> list[Case]:
    arrays = {"x": n(2, 3, 4, 5), "channel_map": n(2, 3, 1, 1), "spatial_map": n(2, 1, 4, 5)}
    return [
        op("bam_combine", lambda x, c, s: F.bam_combine(x, c, s, "sum"),
           lambda T, x, c, s: x * (1 + T.sigmoid(c + s)), "sum", **arrays),
        op("bam_combine", lambda x, c, s: F.bam_combine(x, c, s, "product"),
           lambda T, x, c, s: x * (1 + T.sigmoid(c * s)), "product", **arrays),
    ]


def op_cases(thorough: bool = False) -> list[Case]:
    return (
        elementwise_cases()
        + linalg_cases()
        + shape_cases()
        + conv_cases(thorough)
        + norm_pool_cases(thorough)
        + combine_cases()
        + pool_gate_cases()
        + loss_cases()
    )
