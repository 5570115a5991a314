"""Sigmoid and ReLU. Derivations: docs/derivations/activations.md."""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import require_tensor
from minibam.tensor import Tensor


def stable_sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r"""$\sigma(x) = 1/(1+e^{-x})$ for every finite x, without warnings.

    Accuracy (docs/derivations/activations.md, "A sigmoid that never overflows"; computed
    in tests/test_claims.py): three roundings (exp, the addition, the reciprocal), so
    within about 3u = 3.3e-16 relative in float64 wherever $\sigma(x)$ is a normal
    number. For very negative x (below -709.78 in float64, -88.72 in float32)
    $e^{-x}$ overflows to $+\infty$ and IEEE arithmetic gives $1/(1+\infty) = 0$, with
    only the warning silenced (as is the harmless underflow of $e^{-x}$ for large
    positive x). There $\sigma(x)$ is below the smallest normal number, and for
    x in (-745.1, -709.8) (float64) or (-103.9, -88.7) (float32) it is a non-zero
    subnormal that the formula returns as 0: an absolute error below 2.3e-308 (1.2e-38).
    It needs one exp and no branch per element (a sign split with ``np.where`` costs
    about three times as much), and it is the formula PyTorch's CPU kernel uses.
    ``out=x`` overwrites ``x`` instead of allocating.
    """
    return sigmoid_of_negated(np.negative(x, out=np.empty_like(x) if out is None else out))


def sigmoid_of_negated(neg_x: np.ndarray) -> np.ndarray:
    r"""$\sigma(x) = 1/(1+e^{-x})$ given $-x$, computed in place in ``neg_x``.

    For callers that can build $-x$ for free (BAM negates its small maps before
    broadcasting them), saving a pass over a full-size array.
    """
    with np.errstate(over="ignore", under="ignore"):  # both give the right limit
        np.exp(neg_x, out=neg_x)
    return sigmoid_from_exp(neg_x)


def sigmoid_from_exp(exp_neg_x: np.ndarray) -> np.ndarray:
    r"""$\sigma(x) = 1/(1+e^{-x})$ given $e^{-x}$, computed in place (for BAM's
    combination, which can form $e^{-a}$ as a product of two small maps' exps)."""
    exp_neg_x += 1
    np.reciprocal(exp_neg_x, out=exp_neg_x)
    return exp_neg_x


class Sigmoid(Function):
    r"""$y = \sigma(x)$;  $\bar x = \bar y\, y (1 - y)$, from the saved output."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        y = stable_sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (y,) = ctx.saved
        return (grad * y * (1.0 - y),)


class ReLU(Function):
    r"""$y = \max(x, 0)$;  $\bar x = \bar y\, [x > 0]$ (the subgradient 0 at x = 0, as PyTorch)."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        y = np.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (y,) = ctx.saved
        return (np.where(y > 0, grad, 0).astype(grad.dtype, copy=False),)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid, elementwise; numerically stable for any finite input."""
    return Sigmoid.apply(require_tensor(x, "x", "sigmoid"))


def relu(x: Tensor) -> Tensor:
    """max(x, 0), elementwise."""
    return ReLU.apply(require_tensor(x, "x", "relu"))
