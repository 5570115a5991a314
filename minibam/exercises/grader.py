"""The grader: the trusted side. It never runs a submission's code; a worker process
(`minibam.exercises.worker`) does, and only plain arrays come back.

For each submission the grader, before any student code runs anywhere:

1. finds it (a notebook or ``.py`` file, a folder of them, or a folder of such folders),
   refusing a notebook or folder that is a symbolic link out of its folder;
2. copies it into a private folder of its own (regular files only, bounded in size;
   as root the folder belongs to a user id of the submission's own, mode 0700);
3. reads the cells (the notebook's JSON, in the grader) and scans their text for
   minibam's own implementations of the exercises (`minibam.exercises.scan`).

Then, per submission, it starts a worker in the private folder (HOME and TMPDIR there
too, a new session, a sacrificial middle process between them, the limits described
in `minibam.exercises.worker`), has it run the cells, and for each exercise draws the
cases itself, sends their inputs, reads one frame per case within the time limit, and
judges the answers with `minibam.exercises.checker.judge`. Silence past the time
limit, an early exit, a killed worker or anything malformed on the channel fails that
exercise with a one-line reason; the worker is then ended and the next exercise starts
in a fresh one. When the submission is done, every process it started is ended: the
worker, its session, every process of its user id (as root) and every process
carrying its token in its environment; the grader is a child subreaper meanwhile
(Linux), so nothing it started can be re-parented out of its reach.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minibam.exercises import channel, scan
from minibam.exercises.calling import Outcome, Raised
from minibam.exercises.catalogue import EXERCISES
from minibam.exercises.checker import decoys, judge, signature_problem
from minibam.exercises.core import Exercise
from minibam.exercises.processes import ANSWER_BUDGET, Subreaper, Worker, new_identity, sweep

SUFFIXES = (".ipynb", ".py")
DEFAULT_TIMEOUT = 120.0  # per exercise, and for running the notebook's cells
DEFAULT_MEMORY_MB = 2048
STARTUP = 60.0  # the worker's own start (Python, NumPy, minibam): not the student's time
MAX_SUBMISSION_BYTES = 64 * 2**20
MAX_REASON = 400


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
    folder: Path | None = None  # a folder submission is copied whole; a file alone
    refused: str | None = None


# ----------------------------------------------------------------------------------------
# Finding and copying submissions
# ----------------------------------------------------------------------------------------


def _outside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (maybe a symbolic link) leads out of ``folder``."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return True
    return False


def find_submissions(paths: list[str]) -> list[Submission]:
    """A file is a submission; a folder with notebooks in it is one; a folder of folders
    holds one submission per sub-folder. ``ValueError`` for a path that is none of these.
    A notebook or student folder that is a symbolic link out of its folder is found but
    refused (its rows say so)."""
    found = []
    for text in paths:
        path = Path(text)
        if path.is_file():
            if path.suffix not in SUFFIXES:
                raise ValueError(f"{text}: not a notebook (.ipynb) or Python file (.py)")
            found.append(_checked(Submission(text, (path,)), path.parent))
        elif path.is_dir():
            own = _workbook_files(path)
            if own:
                found.append(_checked(Submission(text, own, path), path))
                continue
            inner = []
            for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                files = _workbook_files(sub)
                if files:
                    inner.append(_checked(Submission(str(sub), files, sub), path, sub))
            if not inner:
                raise ValueError(f"{text}: no notebooks in it, nor in its sub-folders")
            found += inner
        else:
            raise ValueError(f"{text}: no such file or directory")
    return found


def _checked(submission: Submission, parent: Path, folder: Path | None = None) -> Submission:
    if folder is not None and folder.is_symlink():  # even to a classmate's folder beside it
        why = f"refused: the folder is a symbolic link to {folder.resolve()}"
        return Submission(submission.name, submission.files, submission.folder, why)
    home = submission.folder or parent
    for f in submission.files:
        if f.is_symlink() and _outside(f, home):
            why = f"refused: {f.name} is a symbolic link to {f.resolve()}, outside its folder"
            return Submission(submission.name, submission.files, submission.folder, why)
    return submission


def _workbook_files(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.suffix == ".ipynb" and p.is_file()
                        and not p.name.startswith(".")))


def private_copy(submission: Submission, dest: Path) -> tuple[Path, ...]:
    """Copy the submission into ``dest``: regular files only (a symbolic link that stays
    inside the folder is copied as its target's content; others are left out). Returns
    the copied notebooks. ``ValueError`` when it is larger than the limit."""
    dest.mkdir(mode=0o700)
    total = 0

    def copy_file(source: Path, target: Path) -> None:
        nonlocal total
        info = source.stat()
        if not stat.S_ISREG(info.st_mode):  # a fifo or a device would block or never end
            return
        total += info.st_size
        if total > MAX_SUBMISSION_BYTES:
            raise ValueError(f"refused: more than {MAX_SUBMISSION_BYTES // 2**20} MB of files")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    if submission.folder is None:
        for f in submission.files:
            copy_file(f, dest / f.name)
        return tuple(dest / f.name for f in submission.files)
    root = submission.folder
    for here, dirs, files in os.walk(root, followlinks=False):
        base = Path(here)
        dirs[:] = [d for d in dirs if not (base / d).is_symlink()]
        for name in files:
            source = base / name
            if source.is_symlink() and _outside(source, root):
                continue
            copy_file(source, dest / source.relative_to(root))
    return tuple(dest / f.relative_to(root) for f in submission.files)


# ----------------------------------------------------------------------------------------
# A notebook's cells, read in the grader
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
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(map(str, source)) if isinstance(source, list) else str(source)
        if only_checks(source):
            continue
        cells.append((f"{path.name} [cell {number}]", MAGIC.sub(r"\1pass", source)))
    return cells


def read_cells(files: tuple[Path, ...]) -> tuple[list[tuple[str, str]], list[str]]:
    cells, errors = [], []
    for path in files:
        try:
            cells += code_cells(path)
        except (OSError, ValueError, AttributeError, TypeError) as error:
            errors.append(f"{path.name}: cannot be read as a notebook ({type(error).__name__})")
    return cells, errors


# ----------------------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    """A reason fit for one row: control characters escaped, length bounded."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def grade(paths: list[str], timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
          jobs: int | None = None, seed: int = 0) -> list[Row]:
    """One row per submission and exercise, in the order of ``paths`` and of the catalogue."""
    submissions = find_submissions(paths)
    jobs = max(1, jobs or min(len(submissions), os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="minibam-grade-") as root, Subreaper():
        os.chmod(root, 0o711)  # workers may enter their own folder, not list the others
        prepared = [_prepare(s, Path(root) / f"{i:04d}") for i, s in enumerate(submissions)]
        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(lambda p: _grade_prepared(p, timeout, memory_mb, seed), prepared))
        finally:
            for p in prepared:
                sweep(p["who"].token, p["who"].uid)
        _make_removable(Path(root))
    return [row for rows in results for row in rows]


def _make_removable(root: Path) -> None:
    for here, dirs, _ in os.walk(root):
        for d in dirs:
            try:
                os.chmod(Path(here) / d, 0o700, follow_symlinks=False)
            except OSError:
                pass


def _prepare(submission: Submission, folder: Path) -> dict[str, Any]:
    """Everything done before any student code runs: the private copy, the cells, the scan."""
    who = new_identity()
    prepared = {"submission": submission, "folder": folder, "who": who, "refused": submission.refused,
                "cells": [], "read_errors": [], "flags": {}}
    if submission.refused:
        return prepared
    try:
        files = private_copy(submission, folder)
    except (OSError, ValueError) as error:
        prepared["refused"] = str(error) if isinstance(error, ValueError) else f"cannot be copied: {error}"
        return prepared
    prepared["cells"], prepared["read_errors"] = read_cells(files)
    prepared["flags"] = scan.flags(prepared["cells"], EXERCISES)
    if who.uid >= 0:
        try:
            for here, dirs, names in os.walk(folder):
                for name in [".", *dirs, *names]:
                    os.chown(Path(here) / name, who.uid, who.gid, follow_symlinks=False)
        except OSError as error:
            prepared["refused"] = f"cannot be prepared: {error}"
    return prepared


def _grade_prepared(p: dict[str, Any], timeout: float, memory_mb: int, seed: int) -> list[Row]:
    name = p["submission"].name
    if p["refused"]:
        return [Row(name, e.name, False, one_line(p["refused"])) for e in EXERCISES]
    session = Session(p, timeout, memory_mb, seed)
    try:
        return [Row(name, e.name, *session.grade(e)) for e in EXERCISES]
    finally:
        session.close()


class Session:
    """One submission's grading: a worker (fresh after any failure) and one row per exercise."""

    def __init__(self, p: dict[str, Any], timeout: float, memory_mb: int, seed: int) -> None:
        self.p, self.timeout, self.memory_mb, self.seed = p, timeout, memory_mb, seed
        self.worker: Worker | None = None
        self.dead: str | None = None  # the cells cannot be run: every exercise fails with this
        self.defined: dict[str, Any] = {}
        self.cell_errors: list[str] = list(p["read_errors"])
        self.requests = 0

    def close(self) -> None:
        if self.worker is not None:
            self.worker.end()
            self.worker = None

    def _fail_worker(self, settle: float = 0.0) -> str:
        text = self.worker.end(settle) if self.worker is not None else "not started"
        self.worker = None
        return text

    def _start(self) -> None:
        try:
            self.worker = Worker(self.p["folder"], self.memory_mb, self.p["who"])
        except OSError as error:  # out of file descriptors or processes: this submission only
            self.dead = f"the worker process could not be started ({error})"
            return
        try:
            self.worker.frame(time.monotonic() + STARTUP, "ready")
        except (TimeoutError, EOFError, channel.ProtocolError) as error:
            self.dead = f"the worker process did not start ({type(error).__name__}: {self._fail_worker(2.0)})"
            return
        deadline = time.monotonic() + self.timeout
        try:
            self.worker.send({"op": "load", "cells": self.p["cells"]}, None, deadline)
            message, _ = self.worker.frame(deadline, "loaded")
        except TimeoutError:
            self._fail_worker()
            self.dead = f"timed out after {self.timeout:g} s while running the notebook's cells"
            return
        except EOFError:
            self.dead = f"the notebook's cells ended the worker process ({self._fail_worker(2.0)})"
            return
        except channel.ProtocolError as error:
            self._fail_worker()
            self.dead = f"the notebook's cells wrote on the grader's channel ({error})"
            return
        defined, errors = message.get("defined"), message.get("errors")
        self.defined = defined if isinstance(defined, dict) else {}
        fresh = [str(e) for e in errors[:50]] if isinstance(errors, list) else []
        self.cell_errors = list(self.p["read_errors"]) + fresh  # the same again after a restart

    def grade(self, exercise: Exercise) -> tuple[bool, str]:
        passed, reason = self._grade(exercise)
        flag = self.p["flags"].get(exercise.name)
        if flag is not None:
            right = passed or reason.endswith("(its answers are right)")
            passed, reason = False, f"not counted: {flag}" + (" (its answers are right)" if right else f"; {reason}")
        return passed, one_line(reason)

    def _grade(self, exercise: Exercise) -> tuple[bool, str]:
        if self.dead is None and self.worker is None:
            self._start()
        if self.dead is not None:
            return False, self.dead
        info = self.defined.get(exercise.name)
        if not isinstance(info, dict):
            reason = f"missing: no `{exercise.name}` defined"
            if self.cell_errors:
                more = f"; {len(self.cell_errors) - 1} more cells failed" if len(self.cell_errors) > 1 else ""
                reason += f" (a cell failed: {self.cell_errors[0]}{more})"
            return False, reason
        try:
            problem = signature_problem(exercise, _clean_info(info))
        except Exception as error:  # noqa: BLE001 - never let a row take the grader down
            problem = f"could not be checked: {type(error).__name__}"
        if problem is not None:
            return False, problem
        cases = exercise.make_cases(np.random.default_rng(self.seed))
        try:
            outcomes = self._run(exercise, cases)
        except TimeoutError:
            self._fail_worker()
            return False, (f"timed out: no answer within the time limit of {self.timeout:g} s "
                           f"(does it hang?)")
        except EOFError:
            return False, f"the worker process ended during this exercise ({self._fail_worker(2.0)})"
        except channel.ProtocolError as error:
            self._fail_worker()
            return False, f"the worker sent something other than its answers: {error}"
        try:
            report = judge(exercise, cases, outcomes)
        except Exception as error:  # noqa: BLE001 - an answer the judge cannot read is a failed row
            return False, f"could not be judged: {type(error).__name__}: {error}"
        return report.passed, report.reason

    def _run(self, exercise: Exercise, cases: list) -> list[Outcome]:
        worker = self.worker
        self.requests += 1
        worker.reader.budget = ANSWER_BUDGET
        deadline = time.monotonic() + self.timeout
        arrays: list[bytes] = []
        payload = [{"args": channel.encode(c.args, arrays), "decoy": channel.encode(d, arrays)}
                   for c, d in zip(cases, decoys(exercise, cases))]
        data = channel.pack({"op": "run", "id": self.requests, "exercise": exercise.name, "cases": payload},
                            arrays)
        channel.write_all(worker.request_w, data, deadline)
        outcomes = []
        for i in range(len(cases)):
            message, got = worker.frame(deadline, "outcome")
            if message.get("id") != self.requests or message.get("case") != i:
                raise channel.ProtocolError("an answer to a case that was not asked")
            outcomes.append(_outcome(message, got))
        return outcomes


def _text(value: Any, limit: int = 4000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _raised(value: Any) -> Raised | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise channel.ProtocolError("a malformed error report")
    return Raised(_text(value.get("type"), 100) or "Exception", _text(value.get("message")),
                  _text(value.get("traceback"), 8000))


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise channel.ProtocolError("a malformed list of names")
    return tuple(_text(v, 200) for v in value[:50])


def _outcome(message: dict[str, Any], arrays: list[np.ndarray]) -> Outcome:
    """A worker's frame as an Outcome: every field checked, arrays only from the frame."""
    return Outcome(value=channel.decode(message.get("value"), arrays), error=_raised(message.get("error")),
                   mutated=_names(message.get("mutated", [])), relaxed=channel.decode(message.get("relaxed"), arrays),
                   relaxed_error=_raised(message.get("relaxed_error")), used=_names(message.get("used", [])))


def _clean_info(info: dict[str, Any]) -> dict[str, Any]:
    params = info.get("params")
    return {"kind": info.get("kind") if info.get("kind") in ("function", "class", "other") else "other",
            "type": _text(info.get("type"), 100) or "object",
            "params": [_text(p, 100) for p in params[:50]] if isinstance(params, list) else None,
            "binds": info.get("binds") is True, "methods": info.get("methods") is True}
