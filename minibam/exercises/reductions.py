"""Exercises 5 and 11: the backward of sum and mean over axes, and of global average
pooling. Derivations: docs/derivations/reductions.md, docs/derivations/pool.md."""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.exercises.core import Case, Exercise, Mistake, finite_differences, side, upstream
from minibam.function import Context
from minibam.ops.pool import GlobalAvgPool2d
from minibam.ops.reduce import Mean, Sum, normalize_axes

SUM_DOC = "derivations/reductions.md#sum"
MEAN_DOC = "derivations/reductions.md#mean"
POOL_DOC = "derivations/pool.md#global-average-pooling"

# ---------------------------------------------------------------------------- sum / mean


def _reduce_reference(grad: np.ndarray, shape: tuple, axis: Any, keepdims: bool, op: str) -> np.ndarray:
    ctx = Context((True,))
    function = Sum if op == "sum" else Mean
    function.forward(ctx, np.zeros(shape), axes=normalize_axes(axis, tuple(shape), op), keepdims=keepdims)
    return np.array(function.backward(ctx, grad)[0])


def _reduce_cases(rng: np.random.Generator) -> list[Case]:
    """Every branch of the signature: sum and mean, each with axis None, an int (maybe
    negative) and a tuple, with and without keepdims. The first cases reduce a middle
    axis without keepdims: the one a plain broadcast misplaces."""
    draws: list[tuple] = [((2, 3, 4), 1, False, "sum"), ((3, 2, 4), (0, 2), False, "mean"),
                          ((2, 3), -1, True, "mean")]
    for op in ("sum", "mean"):
        for kind in ("none", "int", "tuple"):
            for keepdims in (False, True):
                shape = tuple(side(rng, 2) for _ in range(int(rng.integers(1, 4))))
                ndim = len(shape)
                if kind == "none":
                    axis = None
                elif kind == "int":
                    axis = int(rng.integers(-ndim, ndim))
                else:
                    picked = rng.choice(ndim, size=int(rng.integers(1, ndim + 1)), replace=False)
                    axis = tuple(sorted(int(a) for a in picked))
                draws.append((shape, axis, keepdims, op))
    cases = []
    for shape, axis, keepdims, op in draws:
        out = np.sum(np.zeros(shape), axis=axis, keepdims=keepdims).shape
        cases.append(Case({"op": op, "shape": shape, "axis": axis, "keepdims": keepdims},
                          {"grad": upstream(rng, out), "shape": shape, "axis": axis,
                           "keepdims": keepdims, "op": op}))
    return cases


def _reduce_numeric(case: Case) -> dict[str, np.ndarray]:
    a = case.args
    reduce = np.sum if a["op"] == "sum" else np.mean
    return finite_differences(lambda x: reduce(x, axis=a["axis"], keepdims=a["keepdims"]),
                              {"x": np.zeros(a["shape"])}, a["grad"], {"grad_x": "x"})


def _count(shape: tuple, axis: Any) -> int:
    return int(np.prod([shape[i] for i in normalize_axes(axis, tuple(shape), "mean")]))


def _plain_broadcast(grad: np.ndarray, shape: tuple, axis: Any, keepdims: bool, op: str) -> np.ndarray:
    g = grad / _count(shape, axis) if op == "mean" else grad
    return np.array(np.broadcast_to(g, shape))


def _mean_over_everything(grad: np.ndarray, shape: tuple, axis: Any, keepdims: bool, op: str) -> np.ndarray:
    g = _reduce_reference(grad, shape, axis, keepdims, "sum")
    return g / int(np.prod(shape)) if op == "mean" else g


def _mean_not_divided(grad: np.ndarray, shape: tuple, axis: Any, keepdims: bool, op: str) -> np.ndarray:
    return _reduce_reference(grad, shape, axis, keepdims, "sum")


REDUCE = Exercise(
    name="reduce_backward",
    own=("minibam.ops.reduce:Sum", "minibam.ops.reduce:Mean"),
    title="Sum and mean over axes, with and without keepdims",
    doc="derivations/reductions.md#sum",
    intro=(
        "`y = x.sum(axis, keepdims)` adds up groups of entries, so every entry of a group "
        "receives that group's gradient: the backward of a sum is a broadcast. A mean also "
        "divides by $n$, the number of entries averaged. Write "
        "`reduce_backward(grad, shape, axis, keepdims, op)` for `op` `\"sum\"` or `\"mean\"`, "
        "where `axis` is None, an int (maybe negative) or a tuple. Careful: with "
        "`keepdims=False` the reduced axes are gone from `grad`, and NumPy broadcasts from "
        "the right, so put them back before broadcasting."
    ),
    stub='''def reduce_backward(grad, shape, axis, keepdims, op):
    """Gradient of y = x.sum(axis, keepdims) (op="sum") or x.mean(...) (op="mean").

    grad: dL/dy; shape: x's shape. Returns dL/dx, of shape `shape`.
    """
    raise NotImplementedError
''',
    outputs=("grad_x",),
    gradients=("grad_x",),
    make_cases=_reduce_cases,
    reference=_reduce_reference,
    numeric=_reduce_numeric,
    mistakes=(
        Mistake("reduced axes not put back before broadcasting",
                "NumPy aligns shapes from the right, so with keepdims=False a gradient of "
                "shape (2, 4) from summing axis 1 of (2, 3, 4) does not broadcast to it, and "
                "when it happens to broadcast the values land on the wrong axes. Re-insert the "
                "reduced axes (np.expand_dims) first.", SUM_DOC, _plain_broadcast),
        Mistake("mean divided by the size of the whole array",
                "A mean over some axes divides by the number of entries in each group "
                "(the product of the reduced sizes), not by x.size.", MEAN_DOC, _mean_over_everything),
        Mistake("mean not divided by n",
                "y = (1/n) sum x, so each entry receives grad / n.", MEAN_DOC, _mean_not_divided),
    ),
)

# ---------------------------------------------------------------------------- global average pooling


def _gap_reference(grad: np.ndarray, x_shape: tuple) -> np.ndarray:
    ctx = Context((True,))
    GlobalAvgPool2d.forward(ctx, np.zeros(x_shape))
    return np.array(GlobalAvgPool2d.backward(ctx, grad)[0])


def _gap_cases(rng: np.random.Generator) -> list[Case]:
    shapes = [(2, 3, 3, 5), (1, 2, 4, 4)]  # a non-square map first: BAM's released code differs there
    while len(shapes) < 6:
        shapes.append((side(rng), side(rng), side(rng), side(rng)))
    return [Case({"x_shape": s}, {"grad": upstream(rng, s[:2]), "x_shape": s}) for s in shapes]


def _gap_numeric(case: Case) -> dict[str, np.ndarray]:
    a = case.args
    return finite_differences(lambda x: x.mean(axis=(2, 3)), {"x": np.zeros(a["x_shape"])}, a["grad"],
                              {"grad_x": "x"})


def _square_window(grad: np.ndarray, x_shape: tuple) -> np.ndarray:
    n, c, h, w = x_shape
    dx = np.zeros(x_shape)
    dx[:, :, :h, :h] = (grad / (h * h))[:, :, None, None]
    return dx


def _no_division(grad: np.ndarray, x_shape: tuple) -> np.ndarray:
    return np.array(np.broadcast_to(grad[:, :, None, None], x_shape))


def _divides_by_batch(grad: np.ndarray, x_shape: tuple) -> np.ndarray:
    n, c, h, w = x_shape
    return np.array(np.broadcast_to(grad[:, :, None, None] / (n * h * w), x_shape))


GAP = Exercise(
    name="global_avg_pool2d_backward",
    own=("minibam.ops.pool:GlobalAvgPool2d",),
    title="Global average pooling backward, for any H and W",
    doc=POOL_DOC,
    intro=(
        "BAM's channel branch starts with $g_{nc} = \\frac{1}{HW}\\sum_{h,w} x_{nchw}$. Write "
        "`global_avg_pool2d_backward(grad, x_shape)`: `grad` is dL/dg of shape (N, C); return "
        "dL/dx of shape `x_shape` = (N, C, H, W). Maps need not be square."
    ),
    stub='''def global_avg_pool2d_backward(grad, x_shape):
    """Gradient of g = x.mean(axis=(2, 3)); grad is (N, C), x_shape is (N, C, H, W)."""
    raise NotImplementedError
''',
    outputs=("grad_x",),
    gradients=("grad_x",),
    make_cases=_gap_cases,
    reference=_gap_reference,
    numeric=_gap_numeric,
    mistakes=(
        Mistake("pools an H x H window (BAM's released code)",
                "The authors' code averages a square H x H window; on a map with W != H that is "
                "not the mean over the plane, and the columns beyond H get no gradient.",
                "derivations/pool.md#any-h-and-w", _square_window),
        Mistake("forgets to divide by H W",
                "A mean, not a sum: every pixel receives grad / (H W).", POOL_DOC, _no_division),
        Mistake("divides by N H W",
                "Each sample has its own average; the batch size does not enter: grad / (H W).",
                POOL_DOC, _divides_by_batch),
    ),
)
