"""Matrix products: ``matmul`` (NumPy semantics, batched and broadcast) and ``linear``.

Derivations: docs/derivations/linear.md.
"""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function, unbroadcast
from minibam.ops._checks import optional_tensor, require_tensor
from minibam.tensor import Tensor


def _swap(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


class MatMul(Function):
    r"""$Y = A B$;  $\bar A = \bar Y B^\top$, $\bar B = A^\top \bar Y$.

    A 1-D operand is treated as a row (left) or column (right) vector, as NumPy does,
    and batch axes are summed back to each operand's shape.
    """

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        a, b = ctx.saved
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        # Column axis first: for vector @ vector, grad is 0-D and has no axis -2 yet.
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g @ _swap(b2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(_swap(a2) @ g, b2.shape).reshape(b.shape)
        return ga, gb


class Linear(Function):
    r"""$y = x W^\top + b$ with x (..., in), W (out, in), b (out,).

    $\bar x = \bar y W$,  $\bar W = \bar y^\top x$ (summed over all leading axes),
    $\bar b = \sum \bar y$ over all leading axes.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        ctx.save_for_backward(x, w)
        y = x @ w.T
        if b is not None:
            y = np.add(y, b, out=y) if np.result_type(y, b) == y.dtype else y + b
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        x, w = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        g2 = grad.reshape(-1, grad.shape[-1])
        gx = (grad @ w) if need_x else None
        gw = (g2.T @ x.reshape(-1, x.shape[-1])) if need_w else None
        gb = g2.sum(axis=0) if need_b else None
        return gx, gw, gb


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy's rules for 1-D operands and batch broadcasting."""
    require_tensor(a, "a", "matmul")
    require_tensor(b, "b", "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(
            f"matmul: inner dimensions differ: {a.shape} @ {b.shape} ({k_a} != {k_b})"
        )
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"matmul: batch dimensions of {a.shape} and {b.shape} cannot be broadcast"
        ) from None
    return MatMul.apply(a, b)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``, PyTorch's layout: weight (out_features, in_features)."""
    require_tensor(x, "x", "linear")
    require_tensor(weight, "weight", "linear")
    optional_tensor(bias, "bias", "linear")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out, in), got shape {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {x.shape} does not match weight of shape "
            f"{weight.shape}: expected last dimension {weight.shape[1]}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(
            f"linear: bias must have shape ({weight.shape[0]},) to match weight of shape "
            f"{weight.shape} (out, in), got {bias.shape}"
        )
    return Linear.apply(x, weight, bias)
