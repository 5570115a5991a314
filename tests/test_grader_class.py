"""The grader against a class with honest and hostile submissions, graded in one run.

Honest work: all 15 solved; partly solved with a catalogued mistake. Hostile: a hang, a
flood on the grader's channel, forged rows then an early exit, monkeypatching the
checker plus minibam's own implementations, vandalising the other students' files,
starting processes (detached, double-forked) and signalling its parent, a notebook that
is a symbolic link to a classmate's, a folder name with a newline. Every honest row is
true, every hostile submission gets failed rows with reasons, the grader exits
normally and no process of the class is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minibam.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = Path(__file__).parent / "exercise_solutions"
NAMES = [e.name for e in EXERCISES]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
SETUP = "import numpy as np\nfrom minibam.exercises import check\nfrom minibam.function import Context, Function\n"
MARK = "31337"  # the sleep that a spawning submission starts: found by its argument

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the grader's limits are Linux's")


def stub(name: str) -> str:
    return next(e.stub for e in EXERCISES if e.name == name)


def solution(name: str) -> str:
    return (SOLUTIONS / f"{name}.py").read_text()


def notebook(folder: Path, cells: list[str], name: str = "work.ipynb") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nb = {"nbformat": 4, "nbformat_minor": 4, "metadata": {},
          "cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": c} for c in [SETUP, *cells]]}
    path = folder / name
    path.write_text(json.dumps(nb))
    return path


def stubs_except(solved: dict[str, str]) -> list[str]:
    return [solved.get(name, stub(name)) for name in NAMES]


HANG = '''def im2col(x, kernel_size, stride, padding, dilation):
    while True:
        pass
'''

FLOOD_CELL = '''import os, sys
out = int(sys.argv[2])
for _ in range(50):  # 200 MB without a frame marker
    try:
        os.write(out, b"x" * 4_000_000)
    except OSError:
        break
'''

FLOOD_IN_FUNCTION = '''import os, struct, sys
def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    out = int(sys.argv[2])
    os.write(out, b"MBG1" + struct.pack(">Q", 10**12))  # a frame that claims a terabyte
    os.write(out, b"y" * 1_000_000)
    return cols
'''

EXIT_IN_FUNCTION = '''import os
class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        os._exit(3)

    @staticmethod
    def backward(ctx, grad):
        return grad, grad
'''

FORGE = '''import atexit, json, os, sys
rows = [{"exercise": n, "passed": True, "reason": "passed all cases"} for n in %r]
def forge():
    for fd in range(3, 12):
        try:
            os.write(fd, (json.dumps(rows) + "\\n").encode())
        except OSError:
            pass
atexit.register(forge)
for fd in range(3, 12):
    try:
        os.write(fd, b'{"passed": true}\\n')
    except OSError:
        pass
forge()
os._exit(0)
''' % NAMES  # noqa: UP031 - the notebook's text

PATCH = '''from minibam.exercises import checker
from minibam.functional import im2col, col2im
from minibam.manual import bam_backward
checker.problem_with_outcome = lambda *a, **k: None
checker.judge = lambda *a, **k: None
'''

VANDAL = '''import glob, os, tempfile
targets = glob.glob(%r) + glob.glob("/tmp/minibam-grade-*/*/*") + glob.glob(os.path.join(%r, "*", "*"))
for path in targets:
    try:
        with open(path, "w") as f:
            f.write("{}")
    except OSError:
        pass
'''

SPAWN = '''import os, signal, subprocess, threading
def _try(f):
    try:
        f()
    except Exception:
        pass
_try(lambda: subprocess.Popen(["sleep", "%s"], start_new_session=True))
def double():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "%s"])
        os._exit(0)
_try(double)
_try(lambda: threading.Thread(target=lambda: None).start())
_try(lambda: os.kill(os.getppid(), signal.SIGKILL))

def unbroadcast(grad, shape):
    subprocess.Popen(["sleep", "%s"], start_new_session=True)
    return grad
''' % (MARK, MARK, MARK)  # noqa: UP031 - the notebook's text



# Signals every process it can see, the grader included (only when the worker has a user
# id of its own, as under root: as an ordinary user it would take the test run down too).
SIGNAL_ALL = '''import os, signal
if os.getuid() >= 2**30:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    os.kill(-1, signal.SIGKILL)
'''


def sleepers() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:1] == [b"sleep"] and MARK.encode() in argv:
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    room = tmp_path_factory.mktemp("class")
    honest = notebook(room / "a-honest", [solution(n) for n in NAMES])
    notebook(room / "b-partial", stubs_except({
        "unbroadcast": solution("unbroadcast"), "Div": solution("Div"), "im2col": solution("im2col"),
        # col2im that assigns where it should add: the catalogued mistake
        "col2im": solution("col2im").replace("+=", "="),
    }))
    notebook(room / "c-hang", stubs_except({"unbroadcast": solution("unbroadcast"), "im2col": HANG,
                                           "col2im": solution("col2im")}))
    notebook(room / "d-flood", stubs_except({"col2im": FLOOD_IN_FUNCTION, "unbroadcast": solution("unbroadcast"),
                                            "Div": EXIT_IN_FUNCTION, "conv2d_backward": solution("conv2d_backward")}))
    notebook(room / "e-forge", [*stubs_except({}), FLOOD_CELL, FORGE])
    notebook(room / "f-patch", [*stubs_except({"im2col": "", "col2im": "", "bam_backward": ""}), PATCH])
    notebook(room / "g-vandal", [*stubs_except({}), VANDAL % (str(honest), str(room))])
    notebook(room / "h-spawn", stubs_except({"unbroadcast": SPAWN}))
    notebook(room / "j-signal", [*stubs_except({"unbroadcast": solution("unbroadcast")}), SIGNAL_ALL])
    (room / "i-link").mkdir()
    (room / "i-link" / "work.ipynb").symlink_to(honest)
    (room / "k-folder-link").symlink_to(room / "a-honest")
    before = {p: p.read_bytes() for p in room.rglob("*.ipynb") if not p.is_symlink()}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minibam", "grade", str(room), "--json", "--timeout", "3",
                           "--jobs", "2", "--memory", "1024"], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=240)
    seconds = time.perf_counter() - start
    time.sleep(0.2)
    rows = json.loads(done.stdout) if done.stdout.startswith("[") else []
    if os.environ.get("MINIBAM_CLASS_ROWS"):  # for the closing note: the class's rows and time
        Path(os.environ["MINIBAM_CLASS_ROWS"]).write_text(json.dumps({"seconds": seconds, "rows": rows}))
    table = {(Path(r["submission"]).name, r["exercise"]): r for r in rows}
    return {"done": done, "rows": table, "seconds": seconds, "before": before, "room": room,
            "left": sleepers()}


def of(graded, who: str) -> dict[str, dict]:
    return {ex: r for (s, ex), r in graded["rows"].items() if s == who}


def test_the_grader_exits_normally_with_a_row_for_everyone(graded):
    done = graded["done"]
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert len(graded["rows"]) == 11 * len(NAMES)
    assert all(r["reason"] and "\n" not in r["reason"] for r in graded["rows"].values())
    print(f"class of 11 graded in {graded['seconds']:.1f} s")
    assert graded["seconds"] < 90


def test_honest_rows_are_true(graded):
    honest = of(graded, "a-honest")
    assert all(r["passed"] for r in honest.values()), {k: r["reason"] for k, r in honest.items() if not r["passed"]}
    partial = {ex: r["passed"] for ex, r in of(graded, "b-partial").items()}
    assert [ex for ex, ok in partial.items() if ok] == ["unbroadcast", "Div", "im2col"]
    assert "[known mistake: assigns instead of accumulating]" in of(graded, "b-partial")["col2im"]["reason"]


def test_a_hang_fails_that_exercise_only(graded):
    rows = of(graded, "c-hang")
    assert "timed out" in rows["im2col"]["reason"] and not rows["im2col"]["passed"]
    assert rows["unbroadcast"]["passed"] and rows["col2im"]["passed"]  # the next, in a fresh worker


def test_floods_and_forgeries_are_failed_rows(graded):
    flood = of(graded, "d-flood")
    assert "a message of 1000000000000 bytes" in flood["col2im"]["reason"] and not flood["col2im"]["passed"]
    assert flood["unbroadcast"]["passed"] and flood["conv2d_backward"]["passed"]  # before and after
    assert flood["Div"]["reason"] == "the worker process ended during this exercise (exit status 3)"
    assert "not implemented yet" in flood["matmul_backward"]["reason"]  # graded, in a fresh worker
    forge = of(graded, "e-forge")
    assert not any(r["passed"] for r in forge.values())
    assert all("grader's channel" in r["reason"] or "ended the worker" in r["reason"] for r in forge.values())


def test_monkeypatching_and_reference_imports_do_not_pass(graded):
    rows = of(graded, "f-patch")
    assert not any(r["passed"] for r in rows.values())
    for name in ("im2col", "col2im", "bam_backward"):
        assert rows[name]["reason"].startswith("not counted: cell 17 uses minibam's own implementation"), rows[name]
        assert rows[name]["reason"].endswith("(its answers are right)")
    assert "not implemented yet" in rows["unbroadcast"]["reason"]  # the patched checker is moot


def test_vandalism_changes_no_other_row_nor_any_original(graded):
    assert not any(r["passed"] for r in of(graded, "g-vandal").values())
    if os.geteuid() == 0:  # as root the worker is a user of its own: the originals are out of reach
        assert all(p.read_bytes() == data for p, data in graded["before"].items())


def test_processes_are_refused_and_none_is_left(graded):
    rows = of(graded, "h-spawn")
    assert not rows["unbroadcast"]["passed"]
    assert "BlockingIOError" in rows["unbroadcast"]["reason"] or "Resource" in rows["unbroadcast"]["reason"]
    assert graded["left"] == []


def test_signalling_every_process_reaches_no_one_else(graded):
    """Its own user id owns nothing but the worker (kill(-1) spares the caller): the grader
    and the other workers carry on, and so does this submission's grading."""
    rows = of(graded, "j-signal")
    assert rows["unbroadcast"]["passed"]
    assert not any(r["passed"] for r in rows.values() if r["exercise"] != "unbroadcast")


def test_a_symlink_out_of_its_folder_is_refused(graded):
    rows = of(graded, "i-link")
    assert all(not r["passed"] and r["reason"].startswith("refused: work.ipynb is a symbolic link")
               for r in rows.values())


def test_a_student_folder_that_is_a_symlink_is_refused(graded):
    rows = of(graded, "k-folder-link")
    assert all(not r["passed"] and r["reason"].startswith("refused: the folder is a symbolic link to")
               for r in rows.values())


def test_names_are_escaped_in_the_text_report(tmp_path):
    room = tmp_path / "room"
    notebook(room / "x\nforged  unbroadcast  pass  passed all 8 cases", [stub("unbroadcast")])
    done = subprocess.run([sys.executable, "-m", "minibam", "grade", str(room), "--timeout", "5"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stderr
    assert not any(line.startswith("forged") for line in done.stdout.splitlines())
    assert "x\\nforged" in done.stdout


def test_without_a_user_id_of_its_own_processes_are_still_ended(tmp_path, monkeypatch):
    """As an ordinary user grades (root would give the worker a user id of its own): what
    the worker starts carries the submission's token and is ended by it."""
    from minibam.exercises import grader, processes

    monkeypatch.setattr(processes, "_same_user", True)
    notebook(tmp_path / "room" / "spawn", stubs_except({"unbroadcast": SPAWN, "Div": solution("Div")}))
    notebook(tmp_path / "room" / "honest", [solution("unbroadcast")])
    rows = {(Path(r.submission).name, r.exercise): r for r in grader.grade([str(tmp_path / "room")], timeout=5)}
    assert rows[("honest", "unbroadcast")].passed
    assert rows[("spawn", "Div")].passed  # the worker outlived its middle process being killed
    if os.geteuid() == 0:  # root ignores RLIMIT_NPROC: the sleeps did start, and were ended
        assert "wrong shape" in rows[("spawn", "unbroadcast")].reason
    time.sleep(0.2)
    assert sleepers() == []
