"""Exercise 3: the backward of a batched matrix product. Derivation:
docs/derivations/linear.md ("Matrix product", "Vectors and batches")."""

from __future__ import annotations

import numpy as np

from minibam.exercises.core import (
    Case,
    Exercise,
    Mistake,
    finite_differences,
    side,
    upstream,
    values,
)
from minibam.function import Context
from minibam.ops.linalg import MatMul

DOC = "derivations/linear.md#vectors-and-batches"


def _reference(grad: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    ctx = Context((True, True))
    MatMul.forward(ctx, a, b)
    return MatMul.backward(ctx, grad)


def _cases(rng: np.random.Generator) -> list[Case]:
    batches = [((2,), ()), ((3, 1), (2,)), ((), ())]
    while len(batches) < 6:
        out = tuple(side(rng, 2) for _ in range(int(rng.integers(1, 3))))
        ba = tuple(1 if rng.random() < 0.4 else n for n in out[int(rng.integers(0, len(out) + 1)):])
        bb = tuple(1 if rng.random() < 0.4 else n for n in out[int(rng.integers(0, len(out) + 1)):])
        batches.append((ba, bb))
    cases = []
    for ba, bb in batches:
        m, k, n = side(rng, 2), side(rng, 2), side(rng, 2)
        sa, sb = (*ba, m, k), (*bb, k, n)
        out = (*np.broadcast_shapes(ba, bb), m, n)
        cases.append(Case({"a.shape": sa, "b.shape": sb},
                          {"grad": upstream(rng, out), "a": values(rng, sa), "b": values(rng, sb)}))
    return cases


def _numeric(case: Case) -> dict[str, np.ndarray]:
    a, b, grad = case.args["a"], case.args["b"], case.args["grad"]
    return finite_differences(lambda a, b: a @ b, {"a": a, "b": b}, grad, {"grad_a": "a", "grad_b": "b"})


def _t_on_batches(grad: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    return grad @ b.T, a.T @ grad


def _batch_axes_not_summed(grad: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    return grad @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ grad


def _operands_swapped(grad: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple:
    from minibam.function import unbroadcast

    return (unbroadcast(np.swapaxes(b, -1, -2) @ grad, a.shape),
            unbroadcast(grad @ np.swapaxes(a, -1, -2), b.shape))


MATMUL = Exercise(
    name="matmul_backward",
    own=("minibam.ops.linalg:MatMul",),
    title="Batched matrix product backward",
    doc=DOC,
    intro=(
        "For `Y = A @ B` with `A` (m, k) and `B` (k, n), the derivation gives "
        "$\\bar A = \\bar Y B^\\top$ and $\\bar B = A^\\top \\bar Y$. `np.matmul` also takes "
        "stacks of matrices whose leading (batch) axes broadcast, e.g. `(3, 1, m, k) @ (2, k, n)`. "
        "Write `matmul_backward(grad, a, b)` returning `(grad_a, grad_b)` for operands with at "
        "least two axes: transpose only the last two axes, and sum each gradient back over "
        "the batch axes its operand was broadcast along."
    ),
    stub='''def matmul_backward(grad, a, b):
    """Gradients of y = a @ b (a and b at least 2-D, batch axes broadcast).

    grad: dL/dy, of y's shape. Returns (grad_a, grad_b) of a's and b's shapes.
    """
    raise NotImplementedError
''',
    outputs=("grad_a", "grad_b"),
    gradients=("grad_a", "grad_b"),
    make_cases=_cases,
    reference=_reference,
    numeric=_numeric,
    mistakes=(
        Mistake("`.T` on a stack of matrices",
                "On an array with more than two axes `.T` reverses *all* axes, batch axes "
                "included; transpose the last two only: np.swapaxes(b, -1, -2).",
                DOC, _t_on_batches),
        Mistake("batch axes not summed back",
                "A matrix broadcast over a batch was used once per batch entry, so its "
                "gradient is the sum over the batch: reduce it back to the operand's shape "
                "(unbroadcast).", DOC, _batch_axes_not_summed),
        Mistake("products in the wrong order",
                "grad_a = grad @ b^T and grad_b = a^T @ grad: the upstream gradient stays on "
                "the side of the output the operand was on. Check the shapes: only one order "
                "gives a's shape.", "derivations/linear.md#matrix-product", _operands_swapped),
    ),
)
