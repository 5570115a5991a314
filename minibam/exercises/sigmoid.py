"""Exercise 4: a sigmoid that never overflows, differentiated from its saved output.
Derivation: docs/derivations/activations.md ("Sigmoid")."""

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
from minibam.ops.activation import Sigmoid, stable_sigmoid

FROM_OUTPUT = "derivations/activations.md#the-derivative-from-the-output"
NO_OVERFLOW = "derivations/activations.md#a-sigmoid-that-never-overflows"


def _cases(rng: np.random.Generator) -> list[Case]:
    shapes = [(side(rng), side(rng)) for _ in range(3)]
    xs = [values(rng, s, bound=4.0) for s in shapes]
    # Saturated inputs, one sign per case: e^{-x} overflows at -1000, e^{x} at +1000.
    xs.append(np.array([-1000.0, -50.0, -3.0, 0.5]))
    xs.append(np.array([1000.0, 50.0, 3.0, -0.5]))
    return [Case({"x.shape": x.shape} if x.size != 4 else {"x": x.tolist()},
                 {"x": x, "grad": upstream(rng, x.shape)}) for x in xs]


def _numeric(case: Case) -> dict[str, np.ndarray]:
    return finite_differences(stable_sigmoid, {"x": case.args["x"]}, case.args["grad"], {"grad_x": "x"})


class _Overflows:
    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        s = 1 / (1 + np.exp(-x))
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (s,) = ctx.saved
        return (grad * s * (1 - s),)


class _ExpOverOnePlusExp(_Overflows):
    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        e = np.exp(x)
        s = e / (1 + e)
        ctx.save_for_backward(s)
        return s


class _WhereBothBranches(_Overflows):
    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        s = np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))
        ctx.save_for_backward(s)
        return s


class _OutputTakenAsInput(_Overflows):
    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        s = stable_sigmoid(x)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (s,) = ctx.saved
        sig = stable_sigmoid(s)  # sigma'(s): the formula applied to the output, as if it were x
        return (grad * sig * (1 - sig),)


class _InputInFormula(_Overflows):
    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)
        return stable_sigmoid(x)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (x,) = ctx.saved
        return (grad * x * (1 - x),)


class _NoUpstream(_OutputTakenAsInput):
    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        (s,) = ctx.saved
        return (s * (1 - s),)


SIGMOID = Exercise(
    name="Sigmoid",
    own=("minibam.ops.activation:Sigmoid", "minibam.ops.activation:stable_sigmoid"),
    title="Sigmoid: a stable forward, the backward from the saved output",
    doc="derivations/activations.md#sigmoid",
    intro=(
        "Write `Sigmoid` as a `Function`. The forward must give the right value for every "
        "finite input, $\\pm 1000$ included, without an overflow: the checker turns NumPy's "
        "floating-point warnings into errors. The backward needs only the output: "
        "$\\bar x = \\bar s\\, s (1 - s)$, so save $s$, not $x$."
    ),
    stub='''class Sigmoid(Function):
    """s = 1 / (1 + exp(-x)), elementwise."""

    @staticmethod
    def forward(ctx, x):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        """Return (grad_x,)."""
        raise NotImplementedError
''',
    outputs=("s", "grad_x"),
    gradients=("grad_x",),
    make_cases=_cases,
    reference=Sigmoid,
    numeric=_numeric,
    function_class=True,
    mistakes=(
        Mistake("overflows for large negative x",
                "1/(1 + exp(-x)) computes exp(1000) at x = -1000. The value it ends with (0) "
                "is right, but the overflow is an error here (a warning in a notebook): "
                "silence it knowingly with np.errstate(over='ignore'), or never exponentiate "
                "a positive number.", NO_OVERFLOW, _Overflows),
        Mistake("exp(x) / (1 + exp(x)) overflows for large positive x",
                "This form computes inf / inf = nan at x = +1000. Use 1/(1 + exp(-x)), or split "
                "by sign so that only exp(-|x|) is computed.", NO_OVERFLOW, _ExpOverOnePlusExp),
        Mistake("np.where computes both branches",
                "np.where(x >= 0, f(x), g(x)) evaluates f and g on every element before choosing, "
                "so each overflows where it is thrown away. Compute z = exp(-|x|) once and choose "
                "between 1/(1 + z) and z/(1 + z).", NO_OVERFLOW, _WhereBothBranches),
        Mistake("differentiates the saved output as if it were x",
                "The derivative is s (1 - s) with s the saved output itself; applying the "
                "sigmoid to s again computes sigma'(s), not sigma'(x).", FROM_OUTPUT, _OutputTakenAsInput),
        Mistake("uses x in the formula meant for the output",
                "s (1 - s) needs the output s = sigma(x); x (1 - x) is a different function. "
                "Save the output in forward and use it.", FROM_OUTPUT, _InputInFormula),
        Mistake("forgets the upstream gradient",
                "The chain rule multiplies the local derivative s (1 - s) by the incoming grad.",
                "derivations/index.md#the-one-quantity-every-backward-computes", _NoUpstream),
    ),
)
