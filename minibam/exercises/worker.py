"""The grader's worker: the one process that runs a submission's code.

``python -m minibam.exercises.worker IN OUT MEMORY_MB UID GID`` is started by the grader
(`minibam.exercises.grader`) in a new session, in the submission's private folder. It
first forks: the parent stays behind as a sacrificial middle process (it reports the
worker's pid, waits for it and exits with its status), so that ``os.getppid()`` in the
student's code is not the grader. The worker then imports what it needs, closes every
other file descriptor, caps itself (``RLIMIT_AS`` at MEMORY_MB, ``RLIMIT_NPROC`` 0: it can
start no process and no thread, so its address space is the whole submission's;
``RLIMIT_FSIZE``, ``RLIMIT_CORE``) and, when the grader runs as root, becomes UID/GID,
a user of its own that cannot signal the grader nor touch another submission's copy.

Then it obeys the grader's frames on IN (`minibam.exercises.channel`):
``load`` runs the notebook's cells in order, in one namespace (a failing cell is recorded
and the next still runs; the notebook's ``check(...)`` calls do nothing) and answers with
what each exercise's name is bound to; ``run`` calls the exercise's function on each
case the grader sent (`minibam.exercises.calling`) and answers one frame per case with
the raw result. Nothing here decides a grade: the grader parses these frames as
untrusted bytes and judges the arrays itself.
"""

from __future__ import annotations

import linecache
import os
import sys
import time
from typing import Any

MAX_TEXT = 2000
# Imported before the worker becomes its own user: that user may not be able to read the
# Python installation (a root-only pyenv, say), and a workbook may want any of these.
PRELOAD = ("abc", "bisect", "cmath", "collections", "contextlib", "copy", "dataclasses", "decimal",
           "enum", "fractions", "functools", "heapq", "io", "itertools", "json", "math", "numbers",
           "operator", "pprint", "random", "re", "select", "statistics", "string", "struct",
           "textwrap", "time", "typing", "warnings", "signal", "subprocess", "threading", "glob",
           "tempfile", "atexit", "shutil", "pathlib", "fnmatch", "inspect", "traceback", "errno",
           "hashlib", "base64", "datetime", "csv", "pickle", "unittest", "doctest", "numpy.linalg", "numpy.random", "numpy.fft",
           "numpy.lib.stride_tricks")


def _detach() -> None:
    """Fork; the parent reports the child's pid on stdout, waits for it and exits with a
    status that tells how it ended (128 + signal when killed)."""
    pid = os.fork()
    if pid == 0:
        return
    os.write(1, f"{pid}\n".encode())
    for fd in (int(sys.argv[1]), int(sys.argv[2])):
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status) & 0x7F)


def _confine(keep: tuple[int, ...], memory_mb: int, uid: int, gid: int) -> None:
    import resource

    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    low, high = sorted(keep)
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 65536)
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 2**20, 256 * 2**20))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    if uid >= 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


def run_cells(cells: list[tuple[str, str]], names: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """Execute every code cell in one namespace; returns it and one line per failed cell.

    Each of ``names`` ends bound to the last function or class the notebook itself
    defined under that name, if any: the workbook suggests ``from minibam.functional
    import im2col, col2im`` for a later exercise, and that import must not replace the
    student's own ``im2col`` in the grade."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    errors = []
    own: dict[str, Any] = {}
    for label, source in cells:
        # Registered so that tracebacks can quote the student's lines.
        linecache.cache[label] = (len(source), None, source.splitlines(keepends=True), label)
        try:
            exec(compile(source, label, "exec"), namespace)  # noqa: S102 - the submission, confined
        except BaseException as error:  # SystemExit, KeyboardInterrupt from a cell included
            errors.append(f"{label} raised {type(error).__name__}: {_one_line(error)}")
        for name in names:
            if getattr(namespace.get(name), "__module__", None) == "__main__":
                own[name] = namespace[name]
    return {**namespace, **own}, errors


def _one_line(error: BaseException) -> str:
    if isinstance(error, SyntaxError):  # its str() repeats the cell's label
        return f"{error.msg} (line {error.lineno})"
    text = str(error).strip().splitlines()
    return text[0][:MAX_TEXT] if text else ""


def _raised(r: Any) -> dict[str, str] | None:
    if r is None:
        return None
    return {"type": r.type[:200], "message": r.message[:MAX_TEXT], "traceback": r.traceback[-4 * MAX_TEXT:]}


def serve(in_fd: int, out_fd: int) -> None:
    from minibam.exercises import calling, channel, checker
    from minibam.exercises.catalogue import EXERCISES

    by_name = {e.name: e for e in EXERCISES}
    reader = channel.Reader(in_fd, budget=2**62)
    namespace: dict[str, Any] = {}
    channel.send(out_fd, {"op": "ready"})
    while True:
        try:
            message, arrays = reader.frame(time.monotonic() + 10**9)
        except (EOFError, channel.ProtocolError):
            return
        if message.get("op") == "load":
            cells = [(str(label), str(source)) for label, source in message["cells"]]
            checker._disabled = True  # the notebook's own check() calls do nothing  # noqa: SLF001
            namespace, errors = run_cells(cells, tuple(by_name))
            checker._disabled = False  # noqa: SLF001
            defined = {}
            for exercise in EXERCISES:
                if exercise.name in namespace:
                    try:
                        defined[exercise.name] = checker.describe(namespace[exercise.name],
                                                                  checker.stub_parameters(exercise))
                    except Exception as error:  # noqa: BLE001 - a student's object may raise anything
                        defined[exercise.name] = {"kind": "other", "type": type(error).__name__}
            channel.send(out_fd, {"op": "loaded", "errors": errors[:50], "defined": defined})
        elif message.get("op") == "run":
            exercise = by_name[message["exercise"]]
            fn = namespace.get(exercise.name)
            for i, case in enumerate(message["cases"]):
                args = channel.decode(case["args"], arrays)
                decoy = channel.decode(case["decoy"], arrays)
                outcome = calling.call(fn, args, exercise.function_class, decoy, exercise.own)
                reply = {"op": "outcome", "id": message["id"], "case": i, "error": _raised(outcome.error),
                         "relaxed_error": _raised(outcome.relaxed_error), "mutated": list(outcome.mutated),
                         "used": list(outcome.used)}
                channel.send(out_fd, reply, {"value": outcome.value, "relaxed": outcome.relaxed})


def main(argv: list[str]) -> int:
    in_fd, out_fd, memory_mb, uid, gid = (int(a) for a in argv[:5])
    _detach()
    import importlib

    for name in (*PRELOAD, "minibam.exercises.channel", "minibam.exercises.checker", "minibam.functional",
                 "minibam.manual", "minibam.nn"):
        try:
            importlib.import_module(name)  # before the memory cap binds and the user changes
        except ImportError:
            pass

    _confine((in_fd, out_fd), memory_mb, uid, gid)
    serve(in_fd, out_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
