"""Calling an implementation on one case: the only code of the exercises that runs a
student's function.

Both places that run student code use it: the grader's worker process
(`minibam.exercises.worker`, where the student's code is untrusted and only the raw
return values leave the process) and ``check()`` in a notebook (where the student's
kernel is the only process). The judge (`minibam.exercises.checker`) never calls a
student's function itself; it reads an `Outcome`.

What one call records:

- ``value``: what the function returned, raw (a ``Function`` exercise: the pair
  ``(forward's result, backward's result)``); the judge decides whether it is the right
  kind of thing, so a bare array from a ``backward`` is seen as such;
- ``error``: the exception, as text (type, message, the student's own frames);
- ``mutated``: every argument changed in place;
- ``relaxed``: after a ``FloatingPointError``, the same call again with NumPy's
  floating-point errors ignored, so that a diagnosis can tell an overflow that ends in
  the right value from one that ends in ``nan``;
- ``used``: minibam's own implementations of the exercise that the call reached
  (``sys.setprofile`` sees every Python call made during it).

A ``Function`` exercise is run as the engine runs a graph with two such nodes: the
forward on the case, a second forward on another case (a fresh ``ctx``), then the
backward of the first. State kept on the class instead of on ``ctx`` is then caught.
"""

from __future__ import annotations

import copy
import importlib
import linecache
import sys
import sysconfig
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minibam.function import Context


@dataclass(frozen=True)
class Raised:
    """An exception, as text: what the judge needs and nothing it would have to trust."""

    type: str
    message: str
    traceback: str = ""  # the student's frames only

    @property
    def first_line(self) -> str:
        lines = self.message.strip().splitlines()
        return lines[0] if lines else ""


@dataclass
class Outcome:
    """What one implementation did on one case."""

    value: Any = None
    error: Raised | None = None
    mutated: tuple[str, ...] = ()
    relaxed: Any = None
    relaxed_error: Raised | None = None
    used: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class NotAFunctionClass(Exception):
    """A ``Function`` exercise got something without ``forward`` and ``backward``."""


# ----------------------------------------------------------------------------------------
# Which code is minibam's own implementation of an exercise
# ----------------------------------------------------------------------------------------

_PACKAGE = Path(__file__).resolve().parent.parent  # minibam/
# Code that implements every exercise: the catalogue's own modules (references and
# the correct-by-default builders of its mistakes). The tests' solutions are not part of
# an installed minibam; the grader's source scan looks for them by name.
_EXERCISE_MODULES = ("bam", "batchnorm", "broadcasting", "cbam", "conv", "core", "matmul",
                     "reductions", "sigmoid")
ALWAYS_OWN = tuple(str(_PACKAGE / "exercises" / f"{m}.py") for m in _EXERCISE_MODULES)


def own_code(specs: tuple[str, ...]) -> tuple[dict[Any, str], tuple[str, ...]]:
    """``{code object: label}`` and file prefixes for an exercise's ``own`` entries:
    ``"module:name"`` (a function, or every method of a class) or ``"module"`` (all of a
    package). Entries that do not resolve are skipped."""
    codes: dict[Any, str] = {}
    prefixes = list(ALWAYS_OWN)
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if not attr:
            prefixes.append(str(Path(module.__file__).resolve().parent) + "/")
            continue
        target = getattr(module, attr, None)
        members = vars(target).values() if isinstance(target, type) else (target,)
        for member in members:
            member = getattr(member, "__func__", member)
            code = getattr(member, "__code__", None)
            if code is not None:
                codes[code] = spec.replace(":", ".")
    return codes, tuple(prefixes)


class Tracer:
    """Records which of minibam's implementations a call reaches."""

    def __init__(self, specs: tuple[str, ...]) -> None:
        self.codes, self.prefixes = own_code(specs)
        self.used: set[str] = set()
        self.tampered = False

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        label = self.codes.get(code)
        if label is None and code.co_filename.startswith(self.prefixes):
            label = _label(code.co_filename)
        if label is not None:
            self.used.add(label)

    def __enter__(self) -> Tracer:
        self.previous = sys.getprofile()  # a notebook's own profiler is put back afterwards
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: Any) -> None:
        if sys.getprofile() != self._profile:  # the student's code switched it off
            self.tampered = True
        sys.setprofile(self.previous)


def _label(filename: str) -> str:
    path = Path(filename)
    try:
        return "minibam." + ".".join(path.relative_to(_PACKAGE).with_suffix("").parts)
    except ValueError:
        return filename


# ----------------------------------------------------------------------------------------
# One call
# ----------------------------------------------------------------------------------------


def run_function_class(cls: Any, args: dict[str, Any], decoy: dict[str, Any] | None) -> tuple:
    """``forward`` on the case, a second ``forward`` on ``decoy``, then the first ``backward``."""
    if not (callable(getattr(cls, "forward", None)) and callable(getattr(cls, "backward", None))):
        raise NotAFunctionClass("is not a Function class (it has no forward and backward)")
    inputs = [v for k, v in args.items() if k != "grad"]
    ctx = Context((True,) * len(inputs))
    y = cls.forward(ctx, *inputs)
    if decoy is not None:
        others = [v for k, v in decoy.items() if k != "grad"]
        try:  # the other case's own failure is reported on that case, not on this one
            cls.forward(Context((True,) * len(others)), *others)
        except Exception:  # noqa: BLE001, S110
            pass
    return y, cls.backward(ctx, args["grad"])


def _invoke(fn: Any, args: dict[str, Any], decoy: dict[str, Any] | None, is_class: bool,
            errors: str) -> Any:
    with np.errstate(all=errors, under="ignore"):
        if is_class:
            return run_function_class(fn, args, decoy)
        return fn(**args)


def call(fn: Any, args: dict[str, Any], is_class: bool, decoy: dict[str, Any] | None = None,
         trace: tuple[str, ...] | None = None) -> Outcome:
    """``fn`` on fresh copies of ``args``, NumPy's floating-point warnings raised as errors;
    exceptions are recorded, never raised. ``trace``: the exercise's ``own`` entries, to
    record whether minibam's implementation was reached."""
    work, other = copy.deepcopy(args), copy.deepcopy(decoy)
    tracer = Tracer(trace) if trace is not None else None
    outcome = Outcome()
    try:
        if tracer is not None:
            with tracer:
                outcome.value = _invoke(fn, work, other, is_class, "raise")
        else:
            outcome.value = _invoke(fn, work, other, is_class, "raise")
    except Exception as error:  # a student's code may raise anything; record it
        outcome.error = raised(error)
        if isinstance(error, FloatingPointError):
            try:
                outcome.relaxed = _invoke(fn, copy.deepcopy(args), copy.deepcopy(decoy), is_class, "ignore")
            except Exception as again:  # noqa: BLE001 - recorded like the first
                outcome.relaxed_error = raised(again)
    outcome.mutated = tuple(name for name, original in args.items() if not _same(work.get(name), original))
    if tracer is not None:
        outcome.used = tuple(sorted(tracer.used)) + (("profile switched off",) if tracer.tampered else ())
    return outcome


def _same(a: Any, b: Any) -> bool:
    """Whether ``a`` still equals the original ``b`` (arrays inside dicts and lists too)."""
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return True  # ints, strings, None: immutable


def raised(error: BaseException) -> Raised:
    return Raised(type(error).__name__, str(error), student_traceback(error))


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {str(_PACKAGE), str(Path(np.__file__).parent), paths["stdlib"], paths["platstdlib"],
             paths["purelib"], paths["platlib"]}
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
