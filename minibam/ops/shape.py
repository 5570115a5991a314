"""Ops that move values without changing them: reshape, transpose, expand, slicing.

Each backward moves the gradient back the same way. Derivations:
docs/derivations/elementwise.md, "Shape ops".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.function import Context, Function, unbroadcast
from minibam.ops._checks import integer, require_tensor
from minibam.tensor import Tensor


def _shape_args(shape: tuple, op: str) -> tuple[int, ...]:
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{op}: sizes must be ints, got {shape!r}")
    return tuple(int(n) for n in shape)


class Reshape(Function):
    r"""$y = x$ read in another shape;  $\bar x = \bar y$ read back in x's shape."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, shape: tuple) -> np.ndarray:
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (grad.reshape(ctx.shape),)


class Transpose(Function):
    r"""$y = x$ with axes permuted by p;  $\bar x = \bar y$ permuted by $p^{-1}$."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axes: tuple) -> np.ndarray:
        ctx.inverse = tuple(np.argsort(axes))
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (np.transpose(grad, ctx.inverse),)


class Expand(Function):
    r"""y is x broadcast to a larger shape;  $\bar x$ is ``unbroadcast``$(\bar y)$, the sum over the stretched axes."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, shape: tuple) -> np.ndarray:
        ctx.shape = x.shape
        return np.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (unbroadcast(grad, ctx.shape),)


class GetItem(Function):
    r"""$y = x[\text{index}]$ (basic slicing);  $\bar x$ is zero but $\bar x[\text{index}] = \bar y$."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, index: Any) -> np.ndarray:
        ctx.shape, ctx.index = x.shape, index
        return x[index]

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        gx = np.zeros(ctx.shape, dtype=grad.dtype)
        gx[ctx.index] = grad  # basic slices never repeat an element, so no add needed
        return (gx,)


def reshape(x: Tensor, *shape: Any) -> Tensor:
    require_tensor(x, "x", "reshape")
    shape = _shape_args(shape, "reshape")
    try:
        np.empty(x.shape, dtype=np.bool_).reshape(shape)  # size checks without touching data
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {shape}") from None
    return Reshape.apply(x, shape=shape)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes ``start_dim..end_dim`` into one, as ``torch.flatten``."""
    require_tensor(x, "x", "flatten")
    integer(start_dim, "start_dim", "flatten")
    integer(end_dim, "end_dim", "flatten")
    if x.ndim == 0:
        return reshape(x, 1)
    for d in (start_dim, end_dim):
        if not -x.ndim <= d < x.ndim:
            raise ValueError(f"flatten: dim {d} is out of range for shape {x.shape}")
    start, end = start_dim % x.ndim, end_dim % x.ndim
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = int(np.prod(x.shape[start : end + 1]))
    return reshape(x, *x.shape[:start], merged, *x.shape[end + 1 :])


def _check_permutation(axes: tuple, ndim: int, op: str) -> tuple[int, ...]:
    if sorted(a % max(ndim, 1) for a in axes) != list(range(ndim)) or any(
        not -ndim <= a < ndim for a in axes
    ):
        raise ValueError(f"{op}: axes {axes} are not a permutation of the {ndim} axes of x")
    return tuple(a % ndim for a in axes)


def permute(x: Tensor, *axes: Any) -> Tensor:
    require_tensor(x, "x", "permute")
    axes = _shape_args(axes, "permute")
    return Transpose.apply(x, axes=_check_permutation(axes, x.ndim, "permute"))


def transpose(x: Tensor, *axes: Any) -> Tensor:
    """No axes: reverse them (NumPy). Two axes: swap those two (PyTorch's
    ``transpose(d0, d1)``, so ``transpose(0, 1)`` of a matrix is its transpose).
    All axes of a tensor with other than two dimensions: permute (NumPy)."""
    require_tensor(x, "x", "transpose")
    axes = _shape_args(axes, "transpose")
    if not axes:
        axes = tuple(reversed(range(x.ndim)))
    elif len(axes) == 2:
        d0, d1 = (a % max(x.ndim, 1) for a in axes)
        if not (-x.ndim <= axes[0] < x.ndim and -x.ndim <= axes[1] < x.ndim):
            raise ValueError(f"transpose: axes {axes} out of range for shape {x.shape}")
        order = list(range(x.ndim))
        order[d0], order[d1] = order[d1], order[d0]
        axes = tuple(order)
    return Transpose.apply(x, axes=_check_permutation(axes, x.ndim, "transpose"))


def expand(x: Tensor, *shape: Any) -> Tensor:
    """Broadcast to ``shape``; -1 keeps that axis's size, as ``torch.Tensor.expand``."""
    require_tensor(x, "x", "expand")
    shape = _shape_args(shape, "expand")
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: cannot expand shape {x.shape} to fewer dimensions {shape}")
    shape = tuple(x.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(shape))
    try:
        if np.broadcast_shapes(x.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"expand: cannot broadcast shape {x.shape} to {shape}") from None
    return Expand.apply(x, shape=shape)


def _is_basic(item: Any) -> bool:
    return item is None or item is Ellipsis or isinstance(item, (slice, int, np.integer)) and not isinstance(item, bool)


def getitem(x: Tensor, index: Any) -> Tensor:
    """Basic indexing only (ints, slices, None, ...): each element is picked at most once."""
    items = index if isinstance(index, tuple) else (index,)
    if not all(_is_basic(i) for i in items):
        raise TypeError(
            f"indexing supports ints, slices, None and ... only, got {index!r}"
        )
    try:
        np.empty(x.shape, dtype=np.bool_)[index]
    except (IndexError, OverflowError):
        raise IndexError(f"index {index!r} is out of range for a tensor of shape {x.shape}") from None
    return GetItem.apply(x, index=index)
