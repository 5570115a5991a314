"""A reader that leaves early (``minibam grade DIR | head -1``) must not change the
command's exit status (1 for a failure stays 1) nor print a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MINIBAM = [sys.executable, "-m", "minibam"]


@pytest.fixture(scope="module")
def workbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh student workbook: every exercise a stub, so grading it fails."""
    folder = tmp_path_factory.mktemp("pipes") / "workbook"
    subprocess.run([*MINIBAM, "exercises", "start", str(folder)], env=ENV, check=True,
                   capture_output=True, timeout=120)
    return folder


def run_into_a_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose read end is closed before the command starts: its
    first write already finds the reader gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120)
    finally:
        os.close(write)


@pytest.mark.parametrize("options", [(), ("--json",)])
def test_a_failed_verdict_keeps_exit_1_when_the_reader_has_gone(workbook, options):
    done = run_into_a_closed_pipe([*MINIBAM, "grade", str(workbook), *options])
    assert done.returncode == 1 and done.stderr == "", done.stderr


def test_a_pass_keeps_exit_0_when_the_reader_has_gone():
    done = run_into_a_closed_pipe([*MINIBAM, "exercises", "list"])
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_head_of_a_failed_verdict_under_pipefail(workbook):
    command = f"set -o pipefail; {' '.join(MINIBAM)} grade {workbook} | head -1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stdout.startswith("submission") and done.stdout.count("\n") == 1
    assert done.stderr == "", done.stderr
