"""Sigmoid and ReLU. Derivations: docs/derivations/activations.md."""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import require_tensor
from minibam.tensor import Tensor


def stable_sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r"""$\sigma(x) = 1/(1+e^{-x})$ without overflow for any finite x.

    $\sigma(x) = e^{\min(x, 0)} / (1 + e^{-|x|})$: for $x \ge 0$ this is
    $1/(1+e^{-x})$, for $x < 0$ it is $e^{x}/(1+e^{x})$. Neither exp ever sees a
    positive argument, so nothing overflows, and there is no branch per element
    (a masked ``np.where`` costs more than the second exp). ``out=x`` overwrites
    ``x`` instead of allocating the result.
    """
    # exp underflows to 0 for arguments below ~-745, which is the right value: keep
    # that silent even when the caller has set np.seterr(all="raise").
    with np.errstate(under="ignore"):
        denominator = np.abs(x, out=np.empty_like(x))  # out=: stays an array when 0-d
        numerator = np.minimum(x, 0, out=np.empty_like(x) if out is None else out)
        np.exp(numerator, out=numerator)
        np.negative(denominator, out=denominator)
        np.exp(denominator, out=denominator)
    denominator += 1
    numerator /= denominator
    return numerator


class Sigmoid(Function):
    r"""$s = \sigma(x)$;  $\bar x = \bar s\, s (1 - s)$, from the saved output."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        s = stable_sigmoid(x)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (s,) = ctx.saved
        return (grad * s * (1.0 - s),)


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
