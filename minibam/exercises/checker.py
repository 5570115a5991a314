"""The checker: judge a student's answers on an exercise's cases and say, in plain words,
what is wrong, where, and (when it is a known mistake) which one.

The judge never calls the student's code: it reads the
`Outcome` of each case, made by
`minibam.exercises.calling` (in the grader's worker process, or in the notebook's own
kernel for ``check()``). It computes minibam's answer (``Exercise.reference``) and
central finite differences (``Exercise.numeric``) itself and compares with minibam's one
comparison rule (`minibam.checks.compare.compare`). The report leads with the verdict
and the first failing case: the case's parameters, the array, the worst element with
the student's and the expected value; a wrong shape, dtype or number of results is said
as such; an exception is shown with its traceback trimmed to the student's own lines.
Then `minibam.exercises.diagnosis` names the mistake, if the answer is one of the
exercise's catalogued ones. An answer that reached minibam's own implementation of the
exercise does not pass, whatever its numbers.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam.checks.compare import compare, largest
from minibam.exercises import calling
from minibam.exercises.calling import Outcome
from minibam.exercises.catalogue import EXERCISES
from minibam.exercises.core import Case, Exercise, Mistake, WrongAnswer, answer_of
from minibam.exercises.diagnosis import diagnose
from minibam.function import Context, Function

FD_RTOL, FD_ATOL = 1e-5, 1e-6  # central differences with eps 1e-6 agree to ~1e-9
DOCS = "docs/"
NOT_IMPLEMENTED = "not implemented yet"
FLOATING = "FloatingPointError"


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
    used: tuple[str, ...] = ()  # minibam's own implementations the answer reached

    @property
    def flagged(self) -> str:
        """What the report says when the answer used minibam's own implementation."""
        if not self.used:
            return ""
        return f"it uses minibam's own implementation ({', '.join(self.used)}); write it yourself"

    @property
    def reason(self) -> str:
        """One line: the grader's ``reason`` column."""
        if self.passed:
            return f"passed all {self.cases} cases"
        if self.used:
            verdict = "its answers are right" if self.failed_case is None else f"case {self.failed_case} fails"
            return f"not counted: {self.flagged} ({verdict})"
        first = self.problem.splitlines()[0] if self.problem else "failed"
        known = f" [known mistake: {self.mistake.name}]" if self.mistake else ""
        return f"case {self.failed_case}: {first}{known}"

    def __str__(self) -> str:
        ex = self.exercise
        if self.passed:
            return f"{ex.name}: passed all {self.cases} cases. Well done."
        if self.failed_case is None:
            return f"{ex.name}: NOT COUNTED: {self.flagged}."
        lines = [f"{ex.name}: FAILED on case {self.failed_case} of {self.cases}: {format_params(self.params)}"]
        lines += ["  " + line for line in self.problem.splitlines()]
        if self.mistake is not None:
            lines.append(f"  Known mistake: {self.mistake.name}. {self.mistake.why}")
            lines.append(f"  Read: {DOCS}{self.mistake.doc}")
        elif self.problem.startswith(NOT_IMPLEMENTED):
            lines.append(f"  Hint: start from the derivation, {DOCS}{ex.doc}")
        elif self.problem.startswith(KEEP_NAMES):
            lines.append(f"  Hint: keep the stub's function name and argument names; the grader calls "
                         f"them by name, {ex.name}({', '.join(stub_parameters(ex) or ())})")
        elif self.problem.startswith(f"your code raised {FLOATING}"):
            lines.append("  Hint: NumPy's floating-point warnings are errors here; the traceback shows the "
                         f"operation that overflowed (or divided by zero). The derivation shows a form "
                         f"that avoids it: {DOCS}{ex.doc}")
        else:
            lines.append(f"  Hint: compare each step with the derivation, {DOCS}{ex.doc}")
        if self.used:
            lines.append(f"  NOT COUNTED: {self.flagged}.")
        return "\n".join(lines)


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


# ----------------------------------------------------------------------------------------
# The stub's names
# ----------------------------------------------------------------------------------------

KEEP_NAMES = "keep the stub's argument names"


def stub_object(exercise: Exercise) -> Any:
    """The stub itself (our own source, run here)."""
    namespace: dict[str, Any] = {"Function": Function, "Context": Context, "np": np}
    exec(exercise.stub, namespace)  # noqa: S102 - minibam's own stub
    return namespace[exercise.name]


def stub_parameters(exercise: Exercise) -> list[str] | None:
    """The stub's argument names (None for a Function class)."""
    stub = stub_object(exercise)
    return None if inspect.isclass(stub) else list(inspect.signature(stub).parameters)


def describe(candidate: Any, names: list[str] | None) -> dict[str, Any]:
    """What the judge needs to know about a candidate before calling it: its kind, its
    parameter names and whether it accepts the stub's names as keywords."""
    kind = "class" if inspect.isclass(candidate) else "function" if callable(candidate) else "other"
    info: dict[str, Any] = {"kind": kind, "type": type(candidate).__name__, "params": None,
                            "binds": True, "methods": False}
    if kind == "class":
        info["methods"] = all(callable(getattr(candidate, m, None)) for m in ("forward", "backward"))
    elif kind == "function" and names is not None:
        try:
            signature = inspect.signature(candidate)
        except (TypeError, ValueError):
            return info
        info["params"] = list(signature.parameters)
        try:
            signature.bind(**dict.fromkeys(names))
        except TypeError:
            info["binds"] = False
    return info


def signature_problem(exercise: Exercise, info: dict[str, Any]) -> str | None:
    """Why a candidate described by ``describe`` cannot be the exercise's function or class."""
    names = stub_parameters(exercise)
    if names is None:
        if info.get("kind") != "class" or not info.get("methods"):
            return ("your function is not a Function class (it has no forward and backward): this "
                    "exercise wants a class with static forward(ctx, ...) and backward(ctx, grad), "
                    f"as in the stub (got a {info.get('type')})")
        return None
    if info.get("kind") != "function":
        return f"`{exercise.name}` must be a function, got a {info.get('type')}"
    if not info.get("binds", True):
        have = info.get("params") or []
        return (f"{KEEP_NAMES}: yours is {exercise.name}({', '.join(map(str, have))}), the checker calls "
                f"{exercise.name}({', '.join(names)}) with these names")
    return None


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
            kind = getattr(answer[name], "type_name", type(answer[name]).__name__)
            return f"`{name}` is a {kind}, expected an np.ndarray"
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


def problem_with_outcome(exercise: Exercise, outcome: Outcome, expected: dict[str, Any],
                         numeric: dict[str, Any], gradients: tuple[str, ...]) -> str | None:
    if outcome.error is not None:
        error = outcome.error
        if error.type == "NotImplementedError":
            return f"{NOT_IMPLEMENTED}: your code raises NotImplementedError"
        if error.type == "NotAFunctionClass":
            return f"your `{exercise.name}` {error.message}"
        first = f"your code raised {error.type}: {error.first_line}"
        where = f"\nTraceback (your code only):\n{error.traceback.rstrip()}" if error.traceback else ""
        return first + where
    try:
        answer = answer_of(exercise, outcome.value)
    except WrongAnswer as wrong:
        return f"your function{wrong}" if str(wrong).startswith("'") else f"your function {wrong}"
    if outcome.mutated:
        names = ", ".join(f"`{m}`" for m in outcome.mutated)
        return (f"your function changed its argument{'s' if len(outcome.mutated) > 1 else ''} {names} "
                f"in place; work on a copy (the caller still needs it)")
    return problem_with(answer, expected, numeric, gradients)


# ----------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------


def decoys(exercise: Exercise, cases: list[Case]) -> list[dict[str, Any] | None]:
    """For a Function exercise, the case whose forward runs between each case's forward
    and backward (the next one); None for the others."""
    if not exercise.function_class or len(cases) < 2:
        return [None] * len(cases)
    return [cases[(i + 1) % len(cases)].args for i in range(len(cases))]


def run_check(exercise: Exercise, fn: Any, seed: int = 0, trace: bool = True) -> Report:
    """Every case of ``exercise`` on ``fn``, in this process; the first failure, diagnosed.
    Never raises because of ``fn``. ``trace``: flag calls into minibam's own
    implementation of the exercise (off only for minibam's own catalogued mistakes)."""
    cases = exercise.make_cases(np.random.default_rng(seed))
    problem = signature_problem(exercise, describe(fn, stub_parameters(exercise)))
    if problem is not None:
        return Report(exercise, False, len(cases), 1, cases[0].params, problem)
    specs = exercise.own if trace else None
    outcomes = [calling.call(fn, case.args, exercise.function_class, decoy, specs)
                for case, decoy in zip(cases, decoys(exercise, cases))]
    return judge(exercise, cases, outcomes)


def judge(exercise: Exercise, cases: list[Case], outcomes: list[Outcome]) -> Report:
    """The verdict on ``outcomes`` (one per case, however they were obtained)."""
    used = tuple(sorted({label for o in outcomes for label in o.used}))
    for i, (case, outcome) in enumerate(zip(cases, outcomes)):
        expected = reference_answer(exercise, cases, i)
        gradients = tuple(name for name in expected if exercise.is_gradient(name))
        by_fd = exercise.numeric is not None and outcome.error is None
        numeric = exercise.numeric(case) if by_fd and i < (exercise.fd_cases or len(cases)) else {}
        problem = problem_with_outcome(exercise, outcome, expected, numeric, gradients)
        if problem is not None and by_fd and not numeric:  # show finite differences too
            problem = problem_with_outcome(exercise, outcome, expected, exercise.numeric(case), gradients)
        if problem is not None:
            mistake = diagnose(exercise, cases, outcomes, decoys(exercise, cases))
            return Report(exercise, False, len(cases), i + 1, case.params, problem, mistake, used)
    return Report(exercise, not used, len(cases), used=used)


def reference_answer(exercise: Exercise, cases: list[Case], i: int) -> dict[str, Any]:
    outcome = calling.call(exercise.reference, cases[i].args, exercise.function_class,
                           decoys(exercise, cases)[i])
    if outcome.error is not None:  # minibam's own answer failing is minibam's bug
        raise RuntimeError(f"{exercise.name}: minibam's reference failed on {cases[i].params}: "
                           f"{outcome.error.type}: {outcome.error.message}")
    return {k: np.asarray(v) for k, v in answer_of(exercise, outcome.value).items()}


def find(name: str) -> Exercise:
    for exercise in EXERCISES:
        if exercise.name == name:
            return exercise
    names = ", ".join(e.name for e in EXERCISES)
    raise ValueError(f"check: no exercise named {name!r}; the exercises are {names}")


def check(name_or_fn: str | Callable[..., Any], fn: Any = None, seed: int = 0,
          quiet: bool = False) -> bool:
    """Check a solution: ``check(fn)`` finds the exercise by ``fn``'s name,
    ``check("name", fn)`` names it. Prints what failed, where, and a hint; returns
    True when every case passes.

    It runs in the notebook's own kernel: the student's code and the checks share one
    process, so this is a teaching aid, not a grade (``minibam grade`` runs the student's
    functions in a separate worker process and judges there)."""
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


# The grader's worker sets this while it runs a submission's cells: their check() calls
# do nothing (the grader judges the functions itself afterwards).
_disabled = False
