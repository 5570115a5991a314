"""What an exercise is: the student's stub, the cases, minibam's answer, the known mistakes.

An exercise module builds one [`Exercise`][minibam.exercises.Exercise] (or a few) and the catalogue
(`minibam.exercises.catalogue`) lists them in teaching order. The checker
(`minibam.exercises.checker`) needs nothing else:

- ``stub``: the source the workbook gives the student (a function or a ``Function``
  class named ``name``, raising ``NotImplementedError``);
- ``make_cases(rng)``: the cases, drawn like the test suite draws them
  (``tests/strategies.py``: small sides, values bounded away from 0), each with a random
  upstream gradient among its arguments;
- ``reference``: minibam's own answer, with the student's signature;
- ``numeric(case)``: the same gradients by central finite differences (None for an
  exercise that computes no gradient, such as im2col);
- ``mistakes``: classic wrong answers, each written as a wrong implementation with the
  student's signature. The checker runs them on the student's failing cases to say
  which one the student made.

A ``Function`` exercise (``function_class``) is a class with ``forward(ctx, ...)`` and
``backward(ctx, grad)``; every other exercise is a function called with the case's
arguments by name. ``own`` names minibam's implementations of what the exercise asks
for (``"module:name"`` or a whole ``"module"``): a submission that uses them is flagged.
`answer_of` turns what an implementation returned
into ``{output name: value}``, or says why it cannot be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam.gradcheck import numeric_gradient

FD_EPS = 1e-6


@dataclass(frozen=True)
class Mistake:
    """A classic wrong answer: ``wrong`` is it, written out; ``doc`` explains the right one."""

    name: str  # what the report calls it, e.g. "assigns instead of accumulating"
    why: str  # one or two sentences: what goes wrong and what to do instead
    doc: str  # page#section under docs/
    wrong: Callable[..., Any]


@dataclass(frozen=True)
class Case:
    """One set of arguments. ``params`` is what a report shows (shapes, stride, ...)."""

    params: dict[str, Any]
    args: dict[str, Any]
    hidden: dict[str, Any] = field(default_factory=dict)  # for the finite differences only


@dataclass(frozen=True)
class Exercise:
    name: str  # the function or class the student writes
    title: str
    doc: str  # the derivation the exercise practises: page#section under docs/
    intro: str  # markdown for the workbook
    stub: str  # Python source of the stub
    outputs: tuple[str, ...]  # names of what the function returns, in order
    make_cases: Callable[[np.random.Generator], list[Case]]
    reference: Callable[..., Any]
    mistakes: tuple[Mistake, ...] = ()
    numeric: Callable[[Case], dict[str, np.ndarray]] | None = None
    function_class: bool = False  # a Function class (forward and backward), not a function
    own: tuple[str, ...] = ()  # minibam's implementations of it: using them is flagged
    # Which outputs are gradients (compared with finite differences and judged with the
    # zero-by-construction rule); None: all of them.
    gradients: tuple[str, ...] | None = ()
    # Finite differences on the first ``fd_cases`` cases (None: all) and on a failing one;
    # the others are compared with minibam's ops only (which the test suite checks by FD).
    fd_cases: int | None = None

    def is_gradient(self, output: str) -> bool:
        return self.gradients is None or output in self.gradients



def name_outputs(result: Any, names: Sequence[str]) -> dict[str, Any]:
    """A function's return value as ``{name: value}``: a dict stays, one value gets the
    one name, a tuple is zipped with the names (the checker reports a wrong count)."""
    if isinstance(result, dict):
        return result
    if len(names) == 1:
        return {names[0]: result}
    if not isinstance(result, (tuple, list)):
        kind = getattr(result, "type_name", type(result).__name__)  # channel.Foreign: its type's name
        raise WrongAnswer(f"returned one {kind}, expected a tuple of "
                          f"{len(names)}: ({', '.join(names)})")
    if len(result) != len(names):
        raise WrongAnswer(f"returned a tuple of {len(result)}, expected {len(names)}: "
                          f"({', '.join(names)})")
    return dict(zip(names, result))


def answer_of(exercise: Exercise, value: Any) -> dict[str, Any]:
    """What an implementation returned (``calling.call``'s raw value) as ``{output: value}``;
    ``WrongAnswer`` says why it cannot be read as an answer."""
    if not exercise.function_class:
        return name_outputs(value, exercise.outputs)
    if not (isinstance(value, tuple) and len(value) == 2):
        raise WrongAnswer("gave no result the checker can read")
    y, grads = value
    if not isinstance(grads, (tuple, list)):
        raise WrongAnswer(f"'s backward returned one {type(grads).__name__}, not a tuple: the engine "
                          f"needs a tuple with one gradient per input, e.g. `return (grad_x,)`")
    return name_outputs((y, *grads), exercise.outputs)


class WrongAnswer(Exception):
    """The student's function returned something of the wrong kind (not a wrong number)."""


# ----------------------------------------------------------------------------------------
# Drawing cases like tests/strategies.py does, with NumPy only (hypothesis is a test tool)
# ----------------------------------------------------------------------------------------

MAX_SIDE = 4


def values(rng: np.random.Generator, shape: Sequence[int], bound: float = 2.0,
           margin: float = 0.1, positive: bool = False) -> np.ndarray:
    """``margin <= |value| <= margin + bound``, both signs unless ``positive``: nothing
    lands on a kink or near a zero divisor (as ``strategies.arrays``)."""
    a = rng.uniform(-bound, bound, size=tuple(shape))
    a = np.abs(a) + margin if positive else a + np.where(a < 0, -margin, margin)
    return np.asarray(a, dtype=np.float64)


def upstream(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """A standard-normal dL/dy: never all ones, which hides batch norm's errors."""
    return np.asarray(rng.standard_normal(tuple(shape)), dtype=np.float64)


def side(rng: np.random.Generator, low: int = 1, high: int = MAX_SIDE) -> int:
    return int(rng.integers(low, high + 1))


def broadcast_pair(rng: np.random.Generator, max_dims: int = 4) -> tuple[tuple, tuple]:
    """Two shapes NumPy broadcasts together, with missing leading axes and size-1 axes."""
    out = tuple(side(rng, 2) for _ in range(int(rng.integers(1, max_dims + 1))))
    shapes = []
    for _ in range(2):
        drop = int(rng.integers(0, len(out) + 1))
        shapes.append(tuple(1 if rng.random() < 0.4 else n for n in out[drop:]))
    return shapes[0], shapes[1]


# ----------------------------------------------------------------------------------------
# Finite differences for an exercise's gradients
# ----------------------------------------------------------------------------------------


def finite_differences(forward: Callable[..., np.ndarray], inputs: dict[str, np.ndarray],
                       grad: np.ndarray, wrt: dict[str, str]) -> dict[str, np.ndarray]:
    r"""$\partial \langle \text{grad}, \text{forward}(\text{inputs})\rangle / \partial$ input,
    by central differences, for each ``{output name: input name}`` in ``wrt``."""
    work = {k: np.array(v, dtype=np.float64) for k, v in inputs.items()}

    def loss() -> float:
        return float(np.sum(forward(**work) * grad))

    return {out: numeric_gradient(loss, work[name], FD_EPS) for out, name in wrt.items()}
