"""Exercises: students write each backward pass themselves; minibam checks it and says
what went wrong.

    from minibam.exercises import check
    check(unbroadcast)              # the exercise is found by the function's name
    check("col2im", my_col2im)      # or named

``check`` runs the exercise's cases (random shapes and hyper-parameters, a random
upstream gradient, float64) against minibam's own ops and finite differences, prints
the first failing case in plain words and, when the answer is a catalogued mistake,
names it and points to the derivation that explains it. ``minibam exercises start DIR``
writes the workbook; ``minibam grade`` grades a class. See docs/exercises.md.
"""

from minibam.exercises.catalogue import EXERCISES
from minibam.exercises.checker import Report, check, find, judge, run_check
from minibam.exercises.core import Case, Exercise, Mistake

__all__ = ["EXERCISES", "Case", "Exercise", "Mistake", "Report", "check", "find", "judge", "run_check"]
