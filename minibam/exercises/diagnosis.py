"""Which known mistake did the student make?

Each exercise catalogues classic wrong answers as wrong implementations
([`Mistake`][minibam.exercises.Mistake]). To diagnose a failing answer, each of them
is run on the same cases as the student's, and a mistake is named when it did exactly
what the student's code did on every case: the same numbers (to round-off), the same
shapes, or the same exception. Agreeing on every case, not only the failing one, keeps
a mistake that happens to coincide on one case from being named wrongly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.exercises.checker import Outcome, run_one
from minibam.exercises.core import Case, Exercise, Mistake

MATCH_RTOL = 1e-6


def diagnose(exercise: Exercise, cases: list[Case], outcomes: list[Outcome]) -> Mistake | None:
    """The first catalogued mistake that reproduces the student's outcome on every case."""
    for mistake in exercise.mistakes:
        if all(same_outcome(student, run_one(exercise, mistake.wrong, case))
               for case, student in zip(cases, outcomes)):
            return mistake
    return None


def same_outcome(a: Outcome, b: Outcome) -> bool:
    if (a.error is None) != (b.error is None):
        return False
    if a.error is not None:
        return type(a.error) is type(b.error) and str(a.error) == str(b.error)
    if a.mutated != b.mutated or set(a.answer) != set(b.answer):
        return False
    return all(_same_values(a.answer[k], b.answer[k]) for k in a.answer)


def _same_values(x: Any, y: Any) -> bool:
    try:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if x.shape != y.shape:
        return False
    scale = float(np.max(np.abs(y), initial=0.0))
    return bool(np.allclose(x, y, rtol=MATCH_RTOL, atol=MATCH_RTOL * scale + 1e-12, equal_nan=True))
