"""Exercises 1-2: summing a gradient back to a shape, and an elementwise op as a Function.

Derivations: docs/derivations/elementwise.md ("Broadcasting", "Division").
"""

from __future__ import annotations

import numpy as np

from minibam.exercises.core import (
    Case,
    Exercise,
    Mistake,
    broadcast_pair,
    finite_differences,
    upstream,
    values,
)
from minibam.function import Context
from minibam.function import unbroadcast as minibam_unbroadcast
from minibam.ops.elementwise import Div as MinibamDiv

BROADCASTING = "derivations/elementwise.md#broadcasting"

# ---------------------------------------------------------------------------- unbroadcast


def _unbroadcast_cases(rng: np.random.Generator) -> list[Case]:
    # One case with both kinds of copying first, then random pairs as the test suite draws them.
    pairs = [((3, 1), (2, 3, 4)), ((4,), (3, 4))]
    while len(pairs) < 8:
        shape, other = broadcast_pair(rng)
        out = np.broadcast_shapes(shape, other)
        if out != shape:
            pairs.append((shape, out))
    cases = []
    for shape, out in pairs:
        cases.append(Case({"shape": shape, "grad.shape": out},
                          {"grad": upstream(rng, out), "shape": shape}))
    return cases


def _unbroadcast_numeric(case: Case) -> dict[str, np.ndarray]:
    grad, shape = case.args["grad"], case.args["shape"]
    x = np.zeros(shape)
    return finite_differences(lambda x: np.broadcast_to(x, grad.shape), {"x": x}, grad, {"grad_x": "x"})


def _forgets_leading_axes(grad: np.ndarray, shape: tuple) -> np.ndarray:
    extra = grad.ndim - len(shape)
    stretched = tuple(extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    return grad.sum(axis=stretched, keepdims=True)


def _forgets_keepdims(grad: np.ndarray, shape: tuple) -> np.ndarray:
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra)))
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1))


def _averages_copies(grad: np.ndarray, shape: tuple) -> np.ndarray:
    summed = minibam_unbroadcast(grad, shape)
    return summed * (summed.size / grad.size)


UNBROADCAST = Exercise(
    name="unbroadcast",
    own=("minibam.function:unbroadcast",),
    title="Sum a gradient back to a shape (undo broadcasting)",
    doc=BROADCASTING,
    intro=(
        "When `y = a + b` broadcasts `a` of shape `(3, 1)` to `(2, 3, 4)`, every entry of `a` "
        "is used many times, and its gradient is the **sum** over all its copies. Write "
        "`unbroadcast(grad, shape)`: sum `grad` over the leading axes broadcasting added, "
        "then over the axes where `shape` has 1 (keeping them), so that the result has "
        "exactly `shape`. Every binary op of minibam sends its gradients through this one "
        "function."
    ),
    stub='''def unbroadcast(grad, shape):
    """Sum grad (an np.ndarray) back to `shape` (a tuple), undoing NumPy broadcasting.

    unbroadcast(np.ones((2, 3, 4)), (3, 1)) -> an array of shape (3, 1), every entry 8.0
    """
    raise NotImplementedError
''',
    outputs=("grad_x",),
    gradients=("grad_x",),
    make_cases=_unbroadcast_cases,
    reference=minibam_unbroadcast,
    numeric=_unbroadcast_numeric,
    mistakes=(
        Mistake("forgets the leading axes",
                "Broadcasting also adds axes on the left: (3, 1) against (2, 3, 4) adds the "
                "first axis. Sum over those leading axes first, without keepdims.",
                BROADCASTING, _forgets_leading_axes),
        Mistake("forgets keepdims on the stretched axes",
                "An axis where the input has size 1 must stay in the result with size 1: "
                "sum it with keepdims=True.", BROADCASTING, _forgets_keepdims),
        Mistake("averages the copies instead of summing them",
                "Each copy of an input entry contributed to the loss on its own, so the "
                "gradients of the copies add up: the backward of a copy is a sum, not a mean.",
                BROADCASTING, _averages_copies),
    ),
)

# ---------------------------------------------------------------------------- Div


def _div_cases(rng: np.random.Generator) -> list[Case]:
    pairs = [((2, 3), (3,)), ((4, 1), (1, 3))]
    while len(pairs) < 6:
        pairs.append(broadcast_pair(rng))
    cases = []
    for sa, sb in pairs:
        out = np.broadcast_shapes(sa, sb)
        # |b| >= 0.5: finite differences of a / b stay accurate
        cases.append(Case({"a.shape": sa, "b.shape": sb},
                          {"a": values(rng, sa), "b": values(rng, sb, margin=0.5), "grad": upstream(rng, out)}))
    return cases


def _div_numeric(case: Case) -> dict[str, np.ndarray]:
    a, b, grad = case.args["a"], case.args["b"], case.args["grad"]
    return finite_differences(lambda a, b: a / b, {"a": a, "b": b}, grad, {"grad_a": "a", "grad_b": "b"})


class _DivNoUnbroadcast:
    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        a, b = ctx.saved
        return grad / b, -grad * a / b**2


class _DivNoMinus(_DivNoUnbroadcast):
    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        a, b = ctx.saved
        return minibam_unbroadcast(grad / b, a.shape), minibam_unbroadcast(grad * a / b**2, b.shape)


class _DivForgetsA(_DivNoUnbroadcast):
    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        a, b = ctx.saved
        return minibam_unbroadcast(grad / b, a.shape), minibam_unbroadcast(-grad / b**2, b.shape)


DIV = Exercise(
    name="Div",
    own=("minibam.ops.elementwise:Div",),
    title="An elementwise op with broadcasting, written as a Function",
    doc="derivations/elementwise.md#division",
    intro=(
        "Every op in minibam is a `Function` with `forward(ctx, ...)` and `backward(ctx, grad)` "
        "side by side (see `minibam/function.py`). Write `Div` for `y = a / b`, where `a` and "
        "`b` may have different shapes that broadcast. `forward` saves what `backward` needs "
        "with `ctx.save_for_backward(...)`; `backward` returns `(grad_a, grad_b)`, each of "
        "its input's shape: use your `unbroadcast` from exercise 1 (or minibam's, "
        "`from minibam.function import unbroadcast`)."
    ),
    stub='''class Div(Function):
    """y = a / b, with NumPy broadcasting between a and b."""

    @staticmethod
    def forward(ctx, a, b):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        """Return (grad_a, grad_b), each of its input's shape."""
        raise NotImplementedError
''',
    outputs=("y", "grad_a", "grad_b"),
    gradients=("grad_a", "grad_b"),
    make_cases=_div_cases,
    reference=MinibamDiv,
    numeric=_div_numeric,
    function_class=True,
    mistakes=(
        Mistake("gradients not summed back to the inputs' shapes",
                "When a or b was broadcast, its gradient has the output's shape until it is "
                "summed over the copies: pass each gradient through unbroadcast.",
                BROADCASTING, _DivNoUnbroadcast),
        Mistake("lost the minus sign of d(a/b)/db",
                "d(a/b)/db = -a/b^2: the quotient falls when the divisor grows.",
                "derivations/elementwise.md#division", _DivNoMinus),
        Mistake("forgets the factor a in d(a/b)/db",
                "d(a/b)/db = -a/b^2 (or -y/b with the saved output), not -1/b^2.",
                "derivations/elementwise.md#division", _DivForgetsA),
    ),
)
