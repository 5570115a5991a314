r"""Run one check: an op's backward against central finite differences, and against PyTorch.

A `Case` describes one check: ``draw`` makes its input arrays from a random
generator, ``minibam`` builds a `Probe` from them (the leaf tensors to
differentiate and a deterministic ``run`` of the op: a training-mode batch norm or BAM
restores its running buffers first), and ``torch`` builds the same probe with PyTorch.

**Seeds.** Every case draws its inputs and upstream gradient from its own generator,
seeded by the run's seed and the case's name (`case_seed`), so a row holds the
same numbers whether it runs alone (``-k``), in the default set or in ``--thorough``.

With a random upstream gradient $u$ and $L = \langle u, f(\text{leaves})\rangle$:

- the analytic gradient is one ``backward(u)``;
- the numeric one is $(L(x + \epsilon e_i) - L(x - \epsilon e_i)) / 2\epsilon$ per element,
  in float64 (a random $u$, because with $u = 1$ a wrong batch-norm backward passes);
- PyTorch, when installed, runs the same case in float64 from the same arrays and $u$,
  and its output, input gradients and updated buffers are compared with minibam's.

Every comparison is `minibam.checks.compare.compare`, normwise: the error of an
array is $\max_i |a_i - b_i| / \max_i |b_i|$ with $b$ the reference, and passes at
``FD_TOL`` (against finite differences) or ``TORCH_TOL`` (against PyTorch). A gradient
that is zero by construction (the bias of a layer right before a training-mode batch
norm) is measured on the scale of its case's largest gradient instead, so round-off
never fails it (the rule is in ``compare``, shared with ``compare`` and ``verify``);
against finite differences "zero" means below ``FD_ZERO_BELOW`` of the case's largest,
what central differences can resolve.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam import _config
from minibam.checks.compare import Row, compare, largest, relative_error
from minibam.gradcheck import numeric_gradient as central_differences
from minibam.tensor import Tensor

# eps=1e-5 balances round-off (~1e-16 |L| / eps) against truncation (~eps^2 |L'''|):
# through a whole training-mode BAM the two then agree to ~1e-7, a 100x margin.
FD_EPS = 1e-5
FD_TOL = 1e-5
TORCH_TOL = 1e-10  # two float64 implementations of the same formula
# Finite differences carry an absolute error of ~1e-10 of the case's largest gradient
# (round-off in L over eps), so they cannot tell a gradient below 1e-3 of it from zero:
# such a gradient (e.g. before a batch norm over a batch of 2) is judged on the case's scale.
FD_ZERO_BELOW = 1e-3

Arrays = dict[str, np.ndarray]


@dataclass
class Probe:
    """Leaves to differentiate (minibam or torch tensors), the function of them, and
    the buffers it updates (read right after the first ``run``)."""

    leaves: dict[str, Any]
    run: Callable[[], Any]
    buffers: Callable[[], dict[str, np.ndarray]] = field(default=lambda: {})


@dataclass(frozen=True)
class Case:
    """One row of the ``minibam check`` table: ``draw(rng)`` makes the inputs, which
    ``minibam(inputs)`` and ``torch(torch_module, inputs)`` turn into probes."""

    op: str
    shapes: str
    draw: Callable[[np.random.Generator], Arrays]
    minibam: Callable[[Arrays], Probe]
    torch: Callable[[Any, Arrays], Probe] | None = None

    @property
    def name(self) -> str:
        """Unique within a run; also what the case's seed is derived from."""
        return f"{self.op} [{self.shapes}]"


def case_seed(seed: int, name: str) -> int:
    """A 64-bit seed from the run's ``seed`` and a case's name (stable across runs and
    machines, unlike ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class Result:
    case: Case
    fd_rows: list[Row] = field(default_factory=list)
    torch_rows: list[Row] | None = None  # None: not compared
    failure: str | None = None  # an exception raised by the case
    seconds: float = 0.0

    @property
    def fd_error(self) -> float:
        return max((r.max_rel for r in self.fd_rows), default=float("nan"))

    @property
    def fd_worst(self) -> str:
        return max(self.fd_rows, key=lambda r: r.max_rel).name if self.fd_rows else ""

    @property
    def torch_error(self) -> float | None:
        return None if self.torch_rows is None else max((r.max_rel for r in self.torch_rows), default=0.0)

    @property
    def torch_worst(self) -> str:
        return max(self.torch_rows, key=lambda r: r.max_rel).name if self.torch_rows else ""

    @property
    def passed(self) -> bool:
        return (
            self.failure is None
            and bool(self.fd_rows)
            and all(r.passed for r in self.fd_rows)
            and (self.torch_rows is None or all(r.passed for r in self.torch_rows))
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the case, its verdict, and every compared array."""
        return {
            "name": self.case.name, "op": self.case.op, "shapes": self.case.shapes,
            "passed": self.passed, "failure": self.failure, "seconds": round(self.seconds, 4),
            "fd_error": None if not self.fd_rows else self.fd_error, "fd_worst": self.fd_worst,
            "torch_error": self.torch_error, "torch_worst": self.torch_worst,
            "fd": [r.to_dict() for r in self.fd_rows],
            "torch": None if self.torch_rows is None else [r.to_dict() for r in self.torch_rows],
        }


def _loss(probe: Probe, upstream: np.ndarray) -> float:
    with _config.no_grad():
        return float(np.vdot(probe.run().data, upstream))


def numeric_gradient(probe: Probe, leaf: Tensor, upstream: np.ndarray) -> np.ndarray:
    """Central differences of <upstream, run()> with respect to every element of ``leaf``."""
    return central_differences(lambda: _loss(probe, upstream), leaf.data, FD_EPS)


def gradient_rows(analytic: Arrays, reference: Arrays, tol: float,
                  zero_below: float | None = None) -> list[Row]:
    """``d<name>`` rows, normwise at ``tol``, with the case's largest reference gradient as
    the scale for a gradient that is zero by construction."""
    scale = largest(reference.values())
    return [compare(f"d{k}", analytic[k], reference[k], rtol=tol, atol=0.0, case_scale=scale,
                    normwise=True, zero_below=zero_below) for k in reference]


def run_case(case: Case, seed: int = 0, torch: Any = None) -> Result:
    """Check ``case`` with inputs from `case_seed` (``seed``, its name); never raises
    for a failing op (the failure is in the Result)."""
    result = Result(case)
    start = time.perf_counter()
    try:
        rng = np.random.default_rng(case_seed(seed, case.name))
        inputs = case.draw(rng)
        probe = case.minibam(inputs)
        out = probe.run()
        buffers = probe.buffers()
        upstream = rng.standard_normal(out.shape)
        out.backward(upstream)
        analytic = {
            name: np.zeros(t.shape) if t.grad is None else t.grad.copy()
            for name, t in probe.leaves.items()
        }
        numeric = {name: numeric_gradient(probe, t, upstream) for name, t in probe.leaves.items()}
        result.fd_rows = gradient_rows(analytic, numeric, FD_TOL, FD_ZERO_BELOW)
        if torch is not None and case.torch is not None:
            result.torch_rows = _torch_rows(case, torch, inputs, out.data, upstream, analytic, buffers)
    except Exception as error:  # a broken op is a failed row, not a crashed run
        result.failure = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - start
    return result


def _torch_rows(case: Case, torch: Any, inputs: Arrays, out: np.ndarray, upstream: np.ndarray,
                analytic: Arrays, buffers: Arrays) -> list[Row]:
    probe = case.torch(torch, inputs)
    t_out = probe.run()
    t_buffers = probe.buffers()
    t_out.backward(torch.from_numpy(upstream))
    rows = [compare("y", out, t_out.detach().numpy(), rtol=TORCH_TOL, atol=0.0, normwise=True)]
    reference = {
        name: np.zeros(leaf.shape) if leaf.grad is None else leaf.grad.numpy()
        for name, leaf in probe.leaves.items()
    }
    rows += gradient_rows(analytic, reference, TORCH_TOL)
    for name, value in t_buffers.items():
        ours = buffers.get(name, np.full(value.shape, np.nan))
        rows.append(compare(name, ours, value, rtol=TORCH_TOL, atol=0.0, normwise=True))
    return rows


__all__ = ["FD_EPS", "FD_TOL", "FD_ZERO_BELOW", "TORCH_TOL", "Case", "Probe", "Result", "case_seed",
           "gradient_rows", "numeric_gradient", "relative_error", "run_case"]
