"""The checker: run a student's answer on an exercise's cases and say, in plain words,
what is wrong, where, and (when it is a known mistake) which one.

For every case the student's function gets fresh copies of the arguments, in float64,
with NumPy's floating-point warnings turned into errors (an overflow is a bug the
student should see, not a warning scrolled past). Its answer is compared with minibam's
(``Exercise.reference``) and with central finite differences (``Exercise.numeric``),
using minibam's one comparison rule (`minibam.checks.compare.compare`). The report
leads with the verdict and the first failing case: the case's parameters, the array,
the worst element with the student's and the expected value; a wrong shape, dtype or
number of results is said as such; an exception is shown with its traceback trimmed to
the student's own lines, and never raised. Then `minibam.exercises.diagnosis`
names the mistake, if the answer is one of the exercise's catalogued ones.
"""

from __future__ import annotations

import copy
import linecache
import sys
import sysconfig
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minibam.checks.compare import compare, largest
from minibam.exercises.core import Case, Exercise, Mistake, WrongAnswer

FD_RTOL, FD_ATOL = 1e-5, 1e-6  # central differences with eps 1e-6 agree to ~1e-9
DOCS = "docs/"
NOT_IMPLEMENTED = "not implemented yet"


@dataclass
class Outcome:
    """What one implementation did on one case: an answer, or an exception."""

    answer: dict[str, Any] | None = None
    error: BaseException | None = None
    traceback: str = ""  # the student's frames only
    mutated: str | None = None  # the name of an argument changed in place


@dataclass
class Report:
    """The checker's verdict on one exercise; ``str(report)`` is what ``check`` prints."""

    exercise: Exercise
    passed: bool
    cases: int
    failed_case: int | None = None  # 1-based
    params: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    mistake: Mistake | None = None

    @property
    def reason(self) -> str:
        """One line: the grader's ``reason`` column."""
        if self.passed:
            return f"passed all {self.cases} cases"
        first = self.problem.splitlines()[0] if self.problem else "failed"
        known = f" [known mistake: {self.mistake.name}]" if self.mistake else ""
        return f"case {self.failed_case}: {first}{known}"

    def __str__(self) -> str:
        ex = self.exercise
        if self.passed:
            return f"{ex.name}: passed all {self.cases} cases. Well done."
        lines = [f"{ex.name}: FAILED on case {self.failed_case} of {self.cases}: {format_params(self.params)}"]
        lines += ["  " + line for line in self.problem.splitlines()]
        if self.mistake is not None:
            lines.append(f"  Known mistake: {self.mistake.name}. {self.mistake.why}")
            lines.append(f"  Read: {DOCS}{self.mistake.doc}")
        elif self.problem.startswith(NOT_IMPLEMENTED):
            lines.append(f"  Hint: start from the derivation, {DOCS}{ex.doc}")
        else:
            lines.append(f"  Hint: compare each step with the derivation, {DOCS}{ex.doc}")
        return "\n".join(lines)


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


# ----------------------------------------------------------------------------------------
# Running one implementation
# ----------------------------------------------------------------------------------------


def run_one(exercise: Exercise, fn: Any, case: Case) -> Outcome:
    """``fn`` on fresh copies of the case's arguments; exceptions are caught, not raised."""
    args = copy.deepcopy(case.args)
    try:
        with np.errstate(all="raise", under="ignore"):
            answer = exercise.run(fn, args)
    except Exception as error:  # a student's code may raise anything; report it
        return Outcome(error=error, traceback=student_traceback(error))
    for name, original in case.args.items():
        if isinstance(original, np.ndarray) and not _same(args[name], original):
            return Outcome(answer=answer, mutated=name)
    return Outcome(answer=answer)


def _same(a: Any, b: np.ndarray) -> bool:
    return isinstance(a, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _library_roots() -> tuple[str, ...]:
    import minibam

    paths = sysconfig.get_paths()
    roots = {str(Path(minibam.__file__).parent), str(Path(np.__file__).parent),
             paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    return tuple(sorted(roots))


LIBRARY = _library_roots()


def student_traceback(error: BaseException) -> str:
    """The frames of ``error``'s traceback that are the student's own code: every frame of
    minibam, NumPy and Python itself is left out."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(LIBRARY) and not f.filename.startswith("<frozen")]
    for f in frames:  # a line of a notebook cell compiled by the grader
        if f.line is None:
            f._line = linecache.getline(f.filename, f.lineno or 0).rstrip()  # noqa: SLF001
    return "".join(traceback.format_list(frames))


# ----------------------------------------------------------------------------------------
# Comparing an answer
# ----------------------------------------------------------------------------------------


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (np.generic, float, int)) and not isinstance(value, bool):
        return np.asarray(value)  # a 0-D result such as grad.sum() is a NumPy scalar
    return None


def problem_with(answer: dict[str, Any], expected: dict[str, Any], numeric: dict[str, Any],
                 gradients: tuple[str, ...]) -> str | None:
    """What is wrong with ``answer``, in words, or None when it is right."""
    scale = largest(expected[g] for g in gradients if g in expected)
    for name, want in expected.items():
        if name not in answer:
            return f"no `{name}` in your answer (it has {', '.join(map(repr, answer)) or 'nothing'})"
        got = _as_array(answer[name])
        if got is None:
            return f"`{name}` is a {type(answer[name]).__name__}, expected an np.ndarray"
        if got.shape != want.shape:
            return f"`{name}` has the wrong shape: yours {got.shape}, expected {want.shape}"
        if got.dtype != want.dtype:
            return f"`{name}` has the wrong dtype: yours {got.dtype}, expected {want.dtype}"
        case_scale = scale if name in gradients else None
        row = compare(name, got, want, case_scale=case_scale)
        fd = numeric.get(name)
        fd_row = (None if fd is None else
                  compare(name, got, fd, rtol=FD_RTOL, atol=FD_ATOL, case_scale=case_scale, normwise=True))
        if not row.passed or (fd_row is not None and not fd_row.passed):
            bad = row if not row.passed else fd_row
            index = bad.worst_index
            where = f"index {index}" if index else "the value"
            text = (f"`{name}`: {bad.mismatched} of {bad.size} values wrong; worst at {where}: "
                    f"yours {_num(got[index])}, expected {_num(want[index])}")
            if fd is not None:
                text += f" (finite differences: {_num(fd[index])})"
            return text
    extra = sorted(set(answer) - set(expected))
    if extra:
        return f"unexpected entries in your answer: {', '.join(map(repr, extra))}"
    return None


def _num(value: Any) -> str:
    return f"{float(value):.6g}"


def problem_with_outcome(outcome: Outcome, expected: dict[str, Any], numeric: dict[str, Any],
                         gradients: tuple[str, ...]) -> str | None:
    if outcome.error is not None:
        error = outcome.error
        if isinstance(error, NotImplementedError):
            return f"{NOT_IMPLEMENTED}: your code raises NotImplementedError"
        if isinstance(error, WrongAnswer):
            return f"your function {error}"
        first = f"your code raised {type(error).__name__}: {error}".splitlines()[0]
        where = f"\nTraceback (your code only):\n{outcome.traceback.rstrip()}" if outcome.traceback else ""
        return first + where
    if outcome.mutated is not None:
        return (f"your function changed its argument `{outcome.mutated}` in place; "
                f"work on a copy (the caller still needs it)")
    return problem_with(outcome.answer, expected, numeric, gradients)


# ----------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------


def run_check(exercise: Exercise, fn: Any, seed: int = 0) -> Report:
    """Every case of ``exercise`` on ``fn``; the first failure, diagnosed. Never raises
    because of ``fn``."""
    from minibam.exercises.diagnosis import diagnose

    cases = exercise.make_cases(np.random.default_rng(seed))
    outcomes = [run_one(exercise, fn, case) for case in cases]
    for i, (case, outcome) in enumerate(zip(cases, outcomes)):
        expected = reference_answer(exercise, case)
        gradients = tuple(name for name in expected if exercise.is_gradient(name))
        by_fd = exercise.numeric is not None and outcome.error is None
        numeric = exercise.numeric(case) if by_fd and i < (exercise.fd_cases or len(cases)) else {}
        problem = problem_with_outcome(outcome, expected, numeric, gradients)
        if problem is not None and by_fd and not numeric:  # show finite differences too
            problem = problem_with_outcome(outcome, expected, exercise.numeric(case), gradients)
        if problem is not None:
            mistake = diagnose(exercise, cases, outcomes)
            return Report(exercise, False, len(cases), i + 1, case.params, problem, mistake)
    return Report(exercise, True, len(cases))


def reference_answer(exercise: Exercise, case: Case) -> dict[str, Any]:
    outcome = run_one(exercise, exercise.reference, case)
    if outcome.error is not None:  # minibam's own answer failing is minibam's bug
        raise RuntimeError(f"{exercise.name}: minibam's reference failed on {case.params}") from outcome.error
    return {k: np.asarray(v) for k, v in outcome.answer.items()}


def find(name: str) -> Exercise:
    from minibam.exercises.catalogue import EXERCISES

    for exercise in EXERCISES:
        if exercise.name == name:
            return exercise
    names = ", ".join(e.name for e in EXERCISES)
    raise ValueError(f"check: no exercise named {name!r}; the exercises are {names}")


def check(name_or_fn: str | Callable[..., Any], fn: Any = None, seed: int = 0,
          quiet: bool = False) -> bool:
    """Check a solution: ``check(fn)`` finds the exercise by ``fn``'s name,
    ``check("name", fn)`` names it. Prints what failed, where, and a hint; returns
    True when every case passes."""
    if fn is None:
        fn = name_or_fn
        if isinstance(fn, str):  # check("name") with the solution forgotten
            raise TypeError(f"check: give your solution too, check({fn!r}, your_function)")
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"check: expected a function or class, got {type(fn).__name__}")
    else:
        name = name_or_fn
        if not isinstance(name, str):
            raise TypeError(f"check: the exercise name must be a str, got {type(name).__name__}")
        if not callable(fn):
            raise TypeError(f"check: expected a function or class to check as {name!r}, "
                            f"got {type(fn).__name__}")
    if _disabled:
        return False
    report = run_check(find(name), fn, seed)
    if not quiet:
        print(report, file=sys.stdout, flush=True)
    return report.passed


# The grader sets this while it runs a submission's cells: their check() calls do nothing,
# and the grader runs its own checks afterwards.
_disabled = False
