"""The grader: every submission in its own process, under a time and a memory limit.

A **submission** is a workbook notebook (or a ``.py`` file), or a folder of them. The
child process (``python -m minibam.exercises.grading``) turns a notebook into code the
way a reader would expect: it executes the code cells in order, in one namespace, each
cell on its own, so that a cell that fails (a syntax error, an exception) is recorded
and the next cells still run. IPython magics and shell lines (``%...``, ``!...``) are
skipped, and the notebook's own ``check(...)`` calls do nothing. Then the child runs the
checker itself on each exercise's function, and sends one row per exercise back to the
grader through a pipe of its own: nothing the notebook printed (or stored in its
outputs) is read. The child's address space is capped with ``RLIMIT_AS``, so a 100 GB
allocation is a ``MemoryError`` in the student's code; the grader kills the child's
process group when the time limit runs out, and the exercises not reported by then are
failed rows saying so.

This guards against mistakes (hangs, huge arrays, missing or misnamed functions), not
against a student who sets out to fool the grader: the checks run in the same process
as the student's code.
"""

from __future__ import annotations

import json
import linecache
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUFFIXES = (".ipynb", ".py")
DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY_MB = 2048


@dataclass(frozen=True)
class Row:
    submission: str
    exercise: str
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Submission:
    name: str
    files: tuple[Path, ...]


def find_submissions(paths: list[str]) -> list[Submission]:
    """A file is a submission; a folder with notebooks in it is one; a folder of folders
    holds one submission per sub-folder. ``ValueError`` for a path that is none of these."""
    found = []
    for text in paths:
        path = Path(text)
        if path.is_file():
            if path.suffix not in SUFFIXES:
                raise ValueError(f"{text}: not a notebook (.ipynb) or Python file (.py)")
            found.append(Submission(text, (path,)))
        elif path.is_dir():
            own = _workbook_files(path)
            if own:
                found.append(Submission(text, own))
                continue
            inner = [Submission(str(sub), _workbook_files(sub))
                     for sub in sorted(p for p in path.iterdir() if p.is_dir())]
            inner = [s for s in inner if s.files]
            if not inner:
                raise ValueError(f"{text}: no notebooks in it, nor in its sub-folders")
            found += inner
        else:
            raise ValueError(f"{text}: no such file or directory")
    return found


def _workbook_files(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.suffix == ".ipynb" and p.is_file()
                        and not p.name.startswith(".")))


def grade(paths: list[str], timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
          jobs: int | None = None, seed: int = 0) -> list[Row]:
    """One row per submission and exercise, in the order of ``paths`` and of the catalogue."""
    submissions = find_submissions(paths)
    jobs = jobs or min(len(submissions), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        results = pool.map(lambda s: grade_one(s, timeout, memory_mb, seed), submissions)
        return [row for rows in results for row in rows]


def grade_one(submission: Submission, timeout: float, memory_mb: int, seed: int = 0) -> list[Row]:
    """Run one submission in a child process and turn what it reported into rows."""
    from minibam.exercises.catalogue import EXERCISES

    read_end, write_end = os.pipe()
    import minibam

    # The child imports this very minibam, whatever its working directory; one BLAS
    # thread each, since submissions run side by side.
    here = str(Path(minibam.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    files = [p.resolve() for p in submission.files]
    command = [sys.executable, "-m", "minibam.exercises.grading", str(write_end), str(memory_mb),
               str(seed), *map(str, files)]
    try:
        # In the notebook's folder, as Jupyter runs it (a student may read a file beside it).
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, pass_fds=(write_end,), env=env,
                                 cwd=files[0].parent, start_new_session=True)
    finally:
        os.close(write_end)
    messages: list[dict] = []
    reader = threading.Thread(target=_read_messages, args=(read_end, messages), daemon=True)
    reader.start()
    timed_out = False
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(child.pid, signal.SIGKILL)  # the child and anything it started
        child.wait()
    reader.join(timeout=5)

    reported = {m["exercise"]: m for m in messages if "passed" in m}
    started = [m["start"] for m in messages if "start" in m]
    cells_error = next((m["cells_error"] for m in messages if "cells_error" in m), None)
    rows = []
    for exercise in EXERCISES:
        name = exercise.name
        if name in reported:
            rows.append(Row(submission.name, name, bool(reported[name]["passed"]), reported[name]["reason"]))
            continue
        if timed_out:
            if started and started[-1] == name:
                why = f"timed out: no result within the time limit of {timeout:g} s (does it hang?)"
            elif not started:
                why = f"timed out after {timeout:g} s while running the notebook's cells"
            else:
                why = f"not graded: the time limit of {timeout:g} s ran out on an earlier exercise"
        else:
            why = f"not graded: the grading process stopped ({_exit_text(child.returncode)})"
            if cells_error:
                why += f"; {cells_error}"
        rows.append(Row(submission.name, name, False, why))
    return rows


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"exit status {code}"


def _read_messages(fd: int, into: list[dict]) -> None:
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                into.append(message)


# ----------------------------------------------------------------------------------------
# The child process
# ----------------------------------------------------------------------------------------

MAGIC = re.compile(r"^(\s*)[%!].*$", re.MULTILINE)
CHECK_LINE = re.compile(r"\s*(check\([^()]*\)\s*;?)?\s*(#.*)?")


def only_checks(source: str) -> bool:
    """Whether a cell holds nothing but ``check(...)`` calls (and comments)."""
    return all(CHECK_LINE.fullmatch(line) for line in source.splitlines())


def code_cells(path: Path) -> list[tuple[str, str]]:
    """``(label, source)`` of every code cell of a notebook (a ``.py`` file is one cell),
    with IPython magics and shell lines replaced by ``pass``. The workbook's own
    ``check(...)`` cells are left out: the grader runs its own checks."""
    if path.suffix == ".py":
        return [(path.name, path.read_text(encoding="utf-8"))]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for number, cell in enumerate(notebook.get("cells", []), 1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if only_checks(source):
            continue
        cells.append((f"{path.name} [cell {number}]", MAGIC.sub(r"\1pass", source)))
    return cells


def run_cells(files: list[Path]) -> tuple[dict[str, Any], list[str]]:
    """Execute every code cell in one namespace; returns it and one line per failed cell."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    errors = []
    for path in files:
        try:
            cells = code_cells(path)
        except (OSError, ValueError) as error:
            errors.append(f"{path.name}: cannot be read as a notebook ({type(error).__name__}: {error})")
            continue
        for label, source in cells:
            # Registered so that tracebacks can quote the student's lines.
            linecache.cache[label] = (len(source), None, source.splitlines(keepends=True), label)
            try:
                exec(compile(source, label, "exec"), namespace)  # noqa: S102 - the submission, in its own process
            except BaseException as error:  # SystemExit, KeyboardInterrupt from a cell included
                errors.append(f"{label} raised {type(error).__name__}: {_one_line(error)}")
    return namespace, errors


def _one_line(error: BaseException) -> str:
    if isinstance(error, SyntaxError):  # its str() repeats the cell's label
        return f"{error.msg} (line {error.lineno})"
    text = str(error).strip().splitlines()
    return text[0] if text else ""


def signature_problem(exercise: Any, candidate: Any) -> str | None:
    """Why ``candidate`` cannot be the exercise's function or class, or None."""
    import inspect

    from minibam.function import Context, Function

    stub_namespace: dict[str, Any] = {"Function": Function, "Context": Context}
    exec(exercise.stub, stub_namespace)  # noqa: S102 - our own stub
    stub = stub_namespace[exercise.name]
    if inspect.isclass(stub):
        if not inspect.isclass(candidate):
            return f"`{exercise.name}` must be a class (a Function), got a {type(candidate).__name__}"
        missing = [m for m in ("forward", "backward") if not callable(getattr(candidate, m, None))]
        return f"`{exercise.name}` has no {' or '.join(missing)}" if missing else None
    if not callable(candidate):
        return f"`{exercise.name}` must be a function, got a {type(candidate).__name__}"
    want = list(inspect.signature(stub).parameters)
    try:
        have = list(inspect.signature(candidate).parameters)
    except (TypeError, ValueError):
        return None
    if have != want:
        return f"wrong signature: expected {exercise.name}({', '.join(want)}), got {exercise.name}({', '.join(have)})"
    return None


def child_main(argv: list[str]) -> int:
    fd, memory_mb, seed, files = int(argv[0]), int(argv[1]), int(argv[2]), [Path(p) for p in argv[3:]]
    out = os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def send(**message: Any) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    # Everything the checker needs is imported before the memory cap, which then binds
    # the student's code only.
    import numpy  # noqa: F401

    from minibam.exercises import checker
    from minibam.exercises.catalogue import EXERCISES

    _limit_memory(memory_mb)
    checker._disabled = True  # the notebook's own check() calls do nothing  # noqa: SLF001
    namespace, errors = run_cells(files)
    checker._disabled = False  # noqa: SLF001
    if errors:
        more = f"; {len(errors) - 1} more cells failed" if len(errors) > 1 else ""
        send(cells_error=f"{errors[0]}{more}")
    for exercise in EXERCISES:
        send(start=exercise.name)
        started = time.perf_counter()
        candidate = namespace.get(exercise.name)
        if candidate is None:
            reason = f"missing: no `{exercise.name}` defined"
            if errors:
                more = f"; {len(errors) - 1} more cells failed" if len(errors) > 1 else ""
                reason += f" (a cell failed: {errors[0]}{more})"
            send(exercise=exercise.name, passed=False, reason=reason)
            continue
        try:
            problem = signature_problem(exercise, candidate)
            if problem is not None:
                send(exercise=exercise.name, passed=False, reason=problem)
                continue
            report = checker.run_check(exercise, candidate, seed)
            reason = report.reason
            passed = report.passed
        except BaseException as error:  # the checker must never take the grader down
            passed, reason = False, f"could not be checked: {type(error).__name__}: {_one_line(error)}"
        send(exercise=exercise.name, passed=passed, reason=reason,
             seconds=round(time.perf_counter() - started, 3))
    return 0


def _limit_memory(memory_mb: int) -> None:
    try:
        import resource
    except ImportError:  # not on this platform: the time limit still applies
        return
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
