r"""Run one check: an op's backward against central finite differences, and against PyTorch.

A `Case` builds a `Probe`: the leaf tensors to differentiate and a ``run``
that computes the output from them (deterministically: a training-mode batch norm or
BAM restores its running buffers first). With a random upstream gradient $u$ and
$L = \langle u, f(\text{leaves})\rangle$:

- the analytic gradient is one ``backward(u)``;
- the numeric one is $(L(x + \epsilon e_i) - L(x - \epsilon e_i)) / 2\epsilon$ per element,
  in float64 (a random $u$, because with $u = 1$ a wrong batch-norm backward passes);
- PyTorch, when installed, runs the same case in float64 from the same arrays and $u$,
  and its output, input gradients and updated buffers are compared with minibam's.

Every error is normwise: $\max_i |a_i - b_i| / \max_i |b_i|$, with $b$ the reference,
so a near-zero element cannot blow it up. A gradient that is zero by design (the bias
of a layer followed by a training-mode BatchNorm) would still divide round-off by
zero, so a gradient's denominator is at least ``GRAD_FLOOR`` times the largest
gradient of its case: a wrong gradient is caught unless it is a million times smaller
than the case's others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam import _config
from minibam.gradcheck import numeric_gradient as central_differences
from minibam.tensor import Tensor

# eps=1e-5 balances round-off (~1e-16 |L| / eps) against truncation (~eps^2 |L'''|):
# through a whole training-mode BAM the two then agree to ~1e-7, a 100x margin.
FD_EPS = 1e-5
FD_TOL = 1e-5
TORCH_TOL = 1e-10  # two float64 implementations of the same formula
GRAD_FLOOR = 1e-3


@dataclass
class Probe:
    """Leaves to differentiate (minibam or torch tensors), the function of them, and
    the buffers it updates (read right after the first ``run``)."""

    leaves: dict[str, Any]
    run: Callable[[], Any]
    buffers: Callable[[], dict[str, np.ndarray]] = field(default=lambda: {})


@dataclass(frozen=True)
class Case:
    """One row of the ``minibam check`` table."""

    op: str
    shapes: str
    minibam: Callable[[], Probe]
    torch: Callable[[Any], Probe] | None = None  # given the torch module


@dataclass
class Result:
    case: Case
    fd_error: float = float("nan")
    fd_worst: str = ""
    torch_error: float | None = None  # None: not compared
    torch_worst: str = ""
    failure: str | None = None  # an exception raised by the case
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            self.failure is None
            and self.fd_error <= FD_TOL
            and (self.torch_error is None or self.torch_error <= TORCH_TOL)
        )


def relative_error(actual: np.ndarray, reference: np.ndarray, floor: float = 0.0) -> float:
    """max |actual - reference| / max(max |reference|, floor) (0 when both are zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        return float("inf")
    if reference.size == 0:
        return 0.0
    diff = float(np.max(np.abs(actual - reference)))
    scale = float(np.max(np.abs(reference)))
    if not np.isfinite(diff) or not np.isfinite(scale):
        return float("inf")
    return 0.0 if diff == 0.0 else diff / max(scale, floor, np.finfo(np.float64).tiny)


def _scale(arrays: list[np.ndarray]) -> float:
    return max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0)


def _loss(probe: Probe, upstream: np.ndarray) -> float:
    with _config.no_grad():
        return float(np.vdot(probe.run().data, upstream))


def numeric_gradient(probe: Probe, leaf: Tensor, upstream: np.ndarray) -> np.ndarray:
    """Central differences of <upstream, run()> with respect to every element of ``leaf``."""
    return central_differences(lambda: _loss(probe, upstream), leaf.data, FD_EPS)


def _worst(errors: dict[str, float]) -> tuple[float, str]:
    name = max(errors, key=lambda k: errors[k])
    return errors[name], name


def run_case(case: Case, seed: int, torch: Any = None) -> Result:
    """Check ``case``; never raises for a failing op (the failure is in the Result)."""
    result = Result(case)
    start = time.perf_counter()
    try:
        probe = case.minibam()
        out = probe.run()
        buffers = probe.buffers()
        upstream = np.random.default_rng(seed).standard_normal(out.shape)
        out.backward(upstream)
        analytic = {
            name: np.zeros(t.shape) if t.grad is None else t.grad.copy()
            for name, t in probe.leaves.items()
        }
        numeric = {name: numeric_gradient(probe, t, upstream) for name, t in probe.leaves.items()}
        floor = GRAD_FLOOR * _scale(list(numeric.values()))
        fd = {f"d{k}": relative_error(analytic[k], numeric[k], floor) for k in probe.leaves}
        result.fd_error, result.fd_worst = _worst(fd)
        if torch is not None and case.torch is not None:
            result.torch_error, result.torch_worst = _worst(
                _torch_errors(case, torch, out.data, upstream, analytic, buffers)
            )
    except Exception as error:  # a broken op is a failed row, not a crashed run
        result.failure = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    return result


def _torch_errors(case: Case, torch: Any, out: np.ndarray, upstream: np.ndarray,
                  analytic: dict[str, np.ndarray], buffers: dict[str, np.ndarray]) -> dict[str, float]:
    probe = case.torch(torch)
    t_out = probe.run()
    t_buffers = probe.buffers()
    t_out.backward(torch.from_numpy(upstream))
    errors = {"y": relative_error(out, t_out.detach().numpy())}
    reference = {
        name: np.zeros(leaf.shape) if leaf.grad is None else leaf.grad.numpy()
        for name, leaf in probe.leaves.items()
    }
    floor = GRAD_FLOOR * _scale(list(reference.values()))
    for name, grad in reference.items():
        errors[f"d{name}"] = relative_error(analytic[name], grad, floor)
    for name, value in t_buffers.items():
        errors[name] = relative_error(buffers.get(name, np.full(value.shape, np.nan)), value)
    return errors
