"""``gradcheck``: compare an op's backward with central finite differences.

For a random upstream gradient $u$ (fixed seed) and $L(x) = \\langle u, f(x)\\rangle$,
the analytic $\\partial L/\\partial x$ comes from one backward pass and the numeric one
from $(L(x + \\epsilon e_i) - L(x - \\epsilon e_i)) / 2\\epsilon$ for every element i,
all in float64. A random $u$ matters: with $u = 1$ (a ``sum()`` loss) a wrong
batch-norm backward still passes, because the true gradient is exactly zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import numpy as np

from minibam import _config
from minibam.ops._checks import integer
from minibam.tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


def _as_float64_input(value: Any) -> Any:
    if isinstance(value, Tensor):
        # C order: numeric_gradient perturbs the array through a flat view of it.
        return Tensor(np.array(value.data, dtype=np.float64, order="C"), requires_grad=value.requires_grad)
    return value


def _loss(fn: Callable[..., Tensor], inputs: list, upstream: np.ndarray) -> float:
    with _config.no_grad():
        return float(np.sum(fn(*inputs).data * upstream))


def numeric_gradient(loss: Callable[[], float], x: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of ``loss()`` with respect to every element of ``x``.

    ``x`` is perturbed in place, one element at a time, and restored; ``loss`` must read
    it (``x`` is the ``.data`` of a tensor that ``loss`` uses).
    """
    flat = x.reshape(-1)
    # Perturbing a copy would measure nothing. (An empty x shares no memory with anything,
    # and has nothing to perturb.)
    if x.size and not np.shares_memory(flat, x):
        raise ValueError("numeric_gradient: x must be contiguous, so that it is perturbed in place")
    numeric = np.empty(flat.size)
    # A huge eps overflows to inf and nan: quietly, as every op does (docs/guarantees.md);
    # gradcheck then fails on them.
    with np.errstate(all="ignore"):
        for k in range(flat.size):
            original = flat[k]
            flat[k] = original + eps
            plus = loss()
            flat[k] = original - eps
            minus = loss()
            flat[k] = original
            numeric[k] = (plus - minus) / (2 * eps)
    return numeric.reshape(x.shape)


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Check ``fn``'s backward against central differences for each input needing grad.

    ``inputs`` are passed to ``fn`` positionally; Tensors among them are copied to
    float64 (the caller's tensors are not touched). An element passes when
    ``|analytic - numeric| <= atol + rtol * |numeric|``. Returns True, or raises
    [`GradcheckError`][minibam.gradcheck.GradcheckError] naming the input, the worst element and both values.
    ``fn`` must be deterministic: a module in training mode that updates running
    statistics should be given a function that restores them.
    """
    if not callable(fn):
        raise TypeError(f"gradcheck: fn must be callable, got {type(fn).__name__}")
    for name, value, smallest in (("eps", eps, 0.0), ("atol", atol, None), ("rtol", rtol, None)):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"gradcheck: {name} must be a real number, got {value!r}")
        try:
            # A Python int beyond float64 (or beyond int64, which NumPy's isfinite refuses).
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not (value > 0 if smallest is not None else value >= 0) or not finite:
            kind = "positive" if smallest is not None else "non-negative"
            raise ValueError(f"gradcheck: {name} must be finite and {kind}, got {value!r}")
    integer(seed, "seed", "gradcheck", 0)
    if isinstance(inputs, Tensor) or not isinstance(inputs, (list, tuple)):
        inputs = (inputs,)
    args = [_as_float64_input(v) for v in inputs]
    checked = [i for i, v in enumerate(args) if isinstance(v, Tensor) and v.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no Tensor in inputs has requires_grad=True, nothing to check")

    with _config.no_grad():
        probe = fn(*args)
    if not isinstance(probe, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(probe).__name__}")
    upstream = np.random.default_rng(seed).standard_normal(probe.shape)

    out = fn(*args)
    if not out.requires_grad:
        raise GradcheckError("gradcheck: fn's output does not depend on any checked input")
    out.backward(upstream)

    for i in checked:
        x = args[i]
        analytic = np.zeros(x.shape) if x.grad is None else x.grad.copy()
        numeric = numeric_gradient(lambda: _loss(fn, args, upstream), x.data, eps)
        with np.errstate(all="ignore"):
            excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if np.any(~(excess <= 0)):  # a nan (from a nan or inf gradient) fails, and comes first
            worst = np.unravel_index(int(np.argmax(np.where(np.isnan(excess), np.inf, excess))), x.shape)
            raise GradcheckError(
                f"gradcheck: gradient of input {i} (shape {x.shape}) is wrong at index "
                f"{tuple(int(j) for j in worst)}: analytic {analytic[worst]:.10g}, "
                f"numeric {numeric[worst]:.10g} (atol={atol}, rtol={rtol}, eps={eps}); "
                f"max |analytic - numeric| = {np.max(np.abs(analytic - numeric)):.3g}"
            )
    return True
