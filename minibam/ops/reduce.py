"""Sum and mean over axes. Derivations: docs/derivations/reductions.md."""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import flag, require_tensor
from minibam.tensor import Tensor


def normalize_axes(axis: Any, shape: tuple[int, ...], op: str) -> tuple[int, ...]:
    """``axis`` (None, int or sequence, negatives allowed) of an ``x`` of ``shape``, as
    sorted non-negative ints."""
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for a {ndim}-D tensor (x has shape {shape})")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    if ndim == 0:
        return ()  # as PyTorch: axis 0 or -1 of a 0-D tensor is the tensor itself
    return tuple(sorted(out))


def _spread(grad: np.ndarray, shape: tuple, axes: tuple, keepdims: bool) -> np.ndarray:
    """Put the reduced axes back (as size 1) and broadcast ``grad`` to ``shape``."""
    if not keepdims and shape:
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)


class Sum(Function):
    r"""$y = \sum_{i \in A} x_i$;  $\bar x_i = \bar y$ (copied along the summed axes A)."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axes: tuple, keepdims: bool) -> np.ndarray:
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        return np.sum(x, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (_spread(grad, ctx.shape, ctx.axes, ctx.keepdims),)


class Mean(Function):
    r"""$y = \frac1n \sum_{i \in A} x_i$;  $\bar x_i = \bar y / n$, n = number of averaged elements."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, axes: tuple, keepdims: bool) -> np.ndarray:
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        ctx.count = int(np.prod([x.shape[a] for a in axes]))
        return np.mean(x, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (_spread(grad / ctx.count, ctx.shape, ctx.axes, ctx.keepdims),)


def sum(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    require_tensor(x, "x", "sum")
    axes = normalize_axes(axis, x.shape, "sum")
    return Sum.apply(x, axes=axes, keepdims=flag(keepdims, "keepdims", "sum"))


def mean(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    require_tensor(x, "x", "mean")
    axes = normalize_axes(axis, x.shape, "mean")
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"mean: cannot average over an empty axis of shape {x.shape}")
    return Mean.apply(x, axes=axes, keepdims=flag(keepdims, "keepdims", "mean"))
