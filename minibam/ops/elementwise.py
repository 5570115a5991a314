"""Elementwise arithmetic with NumPy broadcasting.

Every binary op sends its gradient through [`unbroadcast`][minibam.function.unbroadcast],
the one place that sums a gradient back to its input's shape.
Derivations: docs/derivations/elementwise.md.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from minibam.function import Context, Function, unbroadcast
from minibam.ops._checks import require_tensor
from minibam.tensor import Tensor


def _needs(ctx: Context, i: int) -> bool:
    return ctx.needs_input_grad[i]


class Add(Function):
    r"""$y = a + b$;  $\bar a = \bar y$, $\bar b = \bar y$ (each summed to its shape)."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        sa, sb = ctx.shapes
        return (
            unbroadcast(grad, sa) if _needs(ctx, 0) else None,
            unbroadcast(grad, sb) if _needs(ctx, 1) else None,
        )


class Sub(Function):
    r"""$y = a - b$;  $\bar a = \bar y$, $\bar b = -\bar y$."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        sa, sb = ctx.shapes
        return (
            unbroadcast(grad, sa) if _needs(ctx, 0) else None,
            -unbroadcast(grad, sb) if _needs(ctx, 1) else None,
        )


class Mul(Function):
    r"""$y = a b$;  $\bar a = \bar y\, b$, $\bar b = \bar y\, a$."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        a, b = ctx.saved
        return (
            unbroadcast(grad * b, a.shape) if _needs(ctx, 0) else None,
            unbroadcast(grad * a, b.shape) if _needs(ctx, 1) else None,
        )


class Div(Function):
    r"""$y = a / b$;  $\bar a = \bar y / b$, $\bar b = -\bar y\, a / b^2 = -\bar y\, y / b$."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        y = a / b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        a, b, y = ctx.saved
        return (
            unbroadcast(grad / b, a.shape) if _needs(ctx, 0) else None,
            unbroadcast(-grad * y / b, b.shape) if _needs(ctx, 1) else None,
        )


class Neg(Function):
    r"""$y = -x$;  $\bar x = -\bar y$."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        return -x

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (-grad,)


class Pow(Function):
    r"""$y = x^\alpha$ for a constant scalar $\alpha$;  $\bar x = \bar y\, \alpha\, x^{\alpha-1}$."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, exponent: float) -> np.ndarray:
        ctx.save_for_backward(x)
        ctx.exponent = exponent
        return x**exponent

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved
        p = ctx.exponent
        if p == 0:
            # d(x^0)/dx is 0 everywhere, also at x = 0 where x^(p-1) would give 0 * inf = nan.
            return (np.zeros_like(grad),)
        return (grad * p * x ** (p - 1),)


class Exp(Function):
    r"""$y = e^x$;  $\bar x = \bar y\, y$ (the output is reused, no second exp)."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (y,) = ctx.saved
        return (grad * y,)


class Log(Function):
    r"""$y = \ln x$;  $\bar x = \bar y / x$. Non-positive x gives nan/-inf, as in PyTorch."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved
        with np.errstate(divide="ignore"):
            return (grad / x,)


class Cast(Function):
    r"""$y = x$ in another float dtype;  $\bar x = \bar y$ cast back."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (grad.astype(ctx.dtype),)


def _check_pair(a: Any, b: Any, op: str) -> None:
    for name, t in (("left operand", a), ("right operand", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together"
        ) from None


def add(a: Tensor, b: Tensor) -> Tensor:
    _check_pair(a, b, "add")
    return Add.apply(a, b)


def sub(a: Tensor, b: Tensor) -> Tensor:
    _check_pair(a, b, "sub")
    return Sub.apply(a, b)


def mul(a: Tensor, b: Tensor) -> Tensor:
    _check_pair(a, b, "mul")
    return Mul.apply(a, b)


def div(a: Tensor, b: Tensor) -> Tensor:
    _check_pair(a, b, "div")
    return Div.apply(a, b)


def neg(x: Tensor) -> Tensor:
    return Neg.apply(require_tensor(x, "x", "neg"))


def pow(x: Tensor, exponent: Any) -> Tensor:  # noqa: A001
    require_tensor(x, "x", "pow")
    if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real):
        raise TypeError(
            f"pow: the exponent must be a real scalar constant, got {type(exponent).__name__}"
        )
    exponent = float(exponent)
    if exponent.is_integer():
        # Cosmetic only (ctx.exponent reads 2, not 2.0): NumPy gives the same values for an
        # int and an integer-valued float exponent, (-2.0) ** 2.0 == 4.0 included; only a
        # non-integer exponent of a negative base is nan.
        exponent = int(exponent)
    return Pow.apply(x, exponent=exponent)


def exp(x: Tensor) -> Tensor:
    return Exp.apply(require_tensor(x, "x", "exp"))


def log(x: Tensor) -> Tensor:
    return Log.apply(require_tensor(x, "x", "log"))


def cast(x: Tensor, dtype: Any) -> Tensor:
    require_tensor(x, "x", "cast")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"cast: minibam tensors are float32 or float64, not {dtype}")
    if dtype == x.dtype:
        return x
    return Cast.apply(x, dtype=dtype)
