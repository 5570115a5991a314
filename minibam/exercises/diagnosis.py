"""Which known mistake did the student make?

Each exercise catalogues classic wrong answers as wrong implementations
([`Mistake`][minibam.exercises.Mistake]). To diagnose a failing answer, each of them
is run (here, in the judge's process: they are minibam's own code) on the same cases
as the student's, and a mistake is named when it did exactly what the student's code
did on every case: the same numbers (to round-off), the same shapes, the same
arguments changed in place, or the same exception. Agreeing on every case, not only
the failing one, keeps a mistake that happens to coincide on one case from being named.

Two exceptions with the same type and message are not yet the same mistake: an
overflow in ``exp`` is raised by many forms of the sigmoid. After a
``FloatingPointError`` the call is repeated with NumPy's floating-point errors ignored
(``Outcome.relaxed``), and the mistake is named only if that result matches too (the
form that ends in ``inf / inf = nan`` is not the form that ends in the right value).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.exercises.calling import Outcome, Raised, call
from minibam.exercises.core import Case, Exercise, Mistake, WrongAnswer, answer_of

MATCH_RTOL = 1e-6


def diagnose(exercise: Exercise, cases: list[Case], outcomes: list[Outcome],
             decoys: list[dict[str, Any] | None]) -> Mistake | None:
    """The first catalogued mistake that reproduces the student's outcome on every case."""
    for mistake in exercise.mistakes:
        if all(same_outcome(exercise, student, call(mistake.wrong, case.args, exercise.function_class, decoy))
               for case, decoy, student in zip(cases, decoys, outcomes)):
            return mistake
    return None


def same_outcome(exercise: Exercise, a: Outcome, b: Outcome) -> bool:
    if (a.error is None) != (b.error is None):
        return False
    if a.error is not None:
        return (_same_error(a.error, b.error)
                and _same_error(a.relaxed_error, b.relaxed_error)
                and _same_answer(exercise, a.relaxed, b.relaxed))
    return set(a.mutated) == set(b.mutated) and _same_answer(exercise, a.value, b.value)


def _same_error(a: Raised | None, b: Raised | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.type == b.type and a.message == b.message


def _same_answer(exercise: Exercise, x: Any, y: Any) -> bool:
    if x is None or y is None:
        return x is y
    try:
        x, y = answer_of(exercise, x), answer_of(exercise, y)
    except WrongAnswer:
        return False
    if set(x) != set(y):
        return False
    return all(_same_values(x[k], y[k]) for k in x)


def _same_values(x: Any, y: Any) -> bool:
    try:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if x.shape != y.shape:
        return False
    scale = float(np.max(np.abs(np.nan_to_num(y)), initial=0.0))
    return bool(np.allclose(x, y, rtol=MATCH_RTOL, atol=MATCH_RTOL * scale + 1e-12, equal_nan=True))
