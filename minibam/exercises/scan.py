"""Reading a submission's source, without running it, for minibam's own implementations.

The grader's worker traces the calls a student's function makes (``calling.Tracer``),
but the worker is the student's process and its word is not enough. This scan runs in
the grader itself, on the cells' text (``ast``, never ``exec``): every ``import`` and
``from ... import``, and every attribute chain on an imported name
(``F.im2col``, ``minibam.manual.bam_backward``), is resolved to the object it names in
minibam and compared with each exercise's ``own`` entries (by identity, so a re-export
such as ``minibam.functional.im2col`` is the same ``im2col``). Importing the
exercises' own modules (their references and mistake builders) or the tests'
solutions flags every exercise, and so does code the scan cannot read: ``__import__``,
``importlib``, ``exec`` and ``eval`` (an honest workbook needs none of them).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from typing import Any

from minibam.exercises.core import Exercise

ALLOWED_EXERCISES = {"minibam.exercises", "minibam.exercises.check"}  # the workbook's own import
DYNAMIC = {"__import__", "importlib", "exec", "eval"}
# Ways into the worker's own machinery (to make it report what the student did not do).
TAMPER_MODULES = ("minibam.exercises.worker", "minibam.exercises.calling", "minibam.exercises.channel",
                  "gc", "ctypes")
TAMPER_ATTRS = {"__globals__", "f_globals", "f_back", "__code__", "modules", "setprofile", "getprofile"}


def _imports(tree: ast.AST, bound: dict[str, str], names: set[str]) -> None:
    """Record every import under ``tree``: ``bound`` maps a name to what it stands for."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
                top = alias.name.partition(".")[0]
                bound[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full)
                key = f"*{node.module}" if alias.name == "*" else alias.asname or alias.name
                bound[key] = full


def _chains(tree: ast.AST, bound: dict[str, str]) -> set[str]:
    """Dotted names reached under ``tree`` through imported names (``F.im2col``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            inner: Any = node
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in bound:
                found.add(".".join([bound[inner.id], *reversed(chain)]))
        elif isinstance(node, ast.Name) and node.id in bound:
            found.add(bound[node.id])
    return found


def _dynamic(tree: ast.AST, names: set[str]) -> set[str]:
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in DYNAMIC}
    used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in TAMPER_ATTRS}
    used |= {m for m in TAMPER_MODULES if any(n == m or n.startswith(m + ".") for n in names)}
    if "importlib" in {n.partition(".")[0] for n in names}:
        used.add("importlib")
    if any(isinstance(n, ast.Constant) and isinstance(n.value, str) and "exercise_solutions" in n.value
           for n in ast.walk(tree)):
        names.add("exercise_solutions")
    return used


# Modules that may hold an exercise's implementation (or re-export it), imported by the
# grader itself; a name in the student's source is looked up among loaded modules only,
# so that reading it never imports (runs) anything it names, such as ``minibam.__main__``.
KNOWN = ("minibam", "minibam.function", "minibam.functional", "minibam.manual", "minibam.nn",
         "minibam.ops", "minibam.exercises")


def resolve(dotted: str) -> Any:
    """The object a dotted minibam name stands for, or None."""
    for name in KNOWN:
        importlib.import_module(name)
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        target = sys.modules.get(".".join(parts[:cut]))
        if target is None:
            continue
        for attr in parts[cut:]:
            target = getattr(target, attr, None)
            if target is None:
                return None
        return target
    return None


def _own_objects(exercise: Exercise) -> tuple[list[Any], list[str]]:
    objects, packages = [], []
    for spec in exercise.own:
        module, _, attr = spec.partition(":")
        if attr:
            target = resolve(f"{module}.{attr}")
            if target is not None:
                objects.append(target)
        else:
            packages.append(module)
    return objects, packages


def _module_of(target: Any) -> str:
    if inspect.ismodule(target):
        return target.__name__
    return getattr(target, "__module__", None) or ""


def _is_own(target: Any, objects: list[Any], packages: list[str]) -> bool:
    if any(target is o for o in objects):
        return True
    module = _module_of(target)
    return any(module == p or module.startswith(p + ".") for p in packages)


CHECKER = "minibam.exercises.checker"
# What the checker module holds that leads to the references (the rest of it, changed or
# not, is moot: the grader judges in its own process).
CHECKER_TO_REFERENCES = {"EXERCISES", "find", "reference_answer", "run_check", "judge", "calling",
                         "diagnose", "stub_object"}


def _internal(dotted: str) -> bool:
    """The exercises' own code (references, mistake builders, the catalogue, the tests'
    solutions), as opposed to ``check`` and the checker's machinery."""
    if "exercise_solutions" in dotted:
        return True
    if not dotted.startswith("minibam.exercises") or dotted in ALLOWED_EXERCISES:
        return False
    if dotted == CHECKER or dotted.startswith(CHECKER + "."):
        return dotted.removeprefix(CHECKER + ".").partition(".")[0] in CHECKER_TO_REFERENCES
    return True


def _parse(source: str) -> ast.AST | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None  # it does not run in the worker either


def flags(cells: list[tuple[str, str]], exercises: tuple[Exercise, ...]) -> dict[str, str]:
    """``{exercise name: why it does not count}`` for a submission's cells.

    Importing minibam's implementation of an exercise flags that exercise only when the
    exercise's own name is bound to it, or the exercise's function or class refers to it:
    the workbook itself suggests ``from minibam.functional import im2col`` for the
    convolution's backward, which must not cost the student the im2col exercise."""
    found: dict[str, str] = {}
    trees = [(label.rpartition("[")[2].rstrip("]") or label, _parse(source)) for label, source in cells]
    bound: dict[str, str] = {}
    origin: dict[str, str] = {}  # which cell bound each name
    for where, tree in trees:
        if tree is None:
            continue
        names: set[str] = set()
        before = dict(bound)
        _imports(tree, bound, names)
        origin |= {k: where for k, v in bound.items() if before.get(k) != v}
        dynamic = _dynamic(tree, names)
        if dynamic:
            why = (f"{where} uses {', '.join(sorted(dynamic))}, so the grader cannot tell whether it "
                   f"loads minibam's own implementation or changes the worker's report")
            for exercise in exercises:
                found.setdefault(exercise.name, why)
        for dotted in sorted(n for n in names if _internal(n)):
            for exercise in exercises:
                found.setdefault(exercise.name, f"{where} imports the exercises' reference code ({dotted})")
    for exercise in exercises:
        own = _own_objects(exercise)
        reached: list[tuple[str, str]] = []
        if not any(_defines(tree, exercise.name) for _, tree in trees):
            # the name itself is an import (the worker grades the notebook's own definition first)
            for key, dotted in bound.items():
                if key == exercise.name or key.startswith("*"):
                    reached.append((origin.get(key, "a cell"), dotted.removesuffix("*") + exercise.name
                                    if key.startswith("*") else dotted))
        for where, tree in trees:
            reached += [(where, dotted) for dotted in sorted(_reached(tree, exercise.name, bound))]
        for where, dotted in reached:
            target = resolve(dotted) if dotted.startswith("minibam") else None
            if target is not None and _is_own(target, *own):
                found.setdefault(exercise.name, f"{where} uses minibam's own implementation ({dotted})")
    return found


def _defines(tree: ast.AST | None, name: str) -> bool:
    return tree is not None and any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name
        for n in ast.walk(tree))


def _reached(tree: ast.AST | None, name: str, bound: dict[str, str]) -> set[str]:
    """What ``name``'s definition (or an assignment to it) refers to among imported names."""
    reached: set[str] = set()
    if tree is None:
        return reached
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            local = dict(bound)
            _imports(node, local, set())
            reached |= _chains(node, local)
            if isinstance(node, ast.ClassDef):  # class Sigmoid(minibam's Sigmoid): inherited
                for base in node.bases:
                    reached |= _chains(base, local)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            reached |= _chains(node.value, bound)
    return reached
