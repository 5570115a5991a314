"""The grader's processes: the worker it starts for a submission, and the sweep that ends
everything a submission started (`minibam.exercises.grader` describes the whole).

A worker runs as its own user id when the grader is root (`new_identity`), carries a
token in its environment, and sits in a session of its own behind a throwaway middle
process. `sweep` ends every process of that user id or with that token, however it
detached, while the grader is a child subreaper (`Subreaper`, Linux), so that nothing
is re-parented out of its reach.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minibam.exercises import channel

ANSWER_BUDGET = 64 * 2**20  # bytes a worker may send for one exercise



def _processes() -> list[tuple[int, int, int]]:
    """``(pid, ppid, uid)`` of every process (Linux ``/proc``); empty elsewhere."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            found.append((int(entry), int(fields["PPid"]), int(fields["Uid"].split()[0])))
        except (KeyError, ValueError, IndexError):
            continue
    return found


def _carries(pid: int, token: bytes) -> bool:
    try:
        return token in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def leftovers(token: str, uid: int) -> list[int]:
    """Live processes of a submission: its user id (as root) or its token in their environment."""
    me, mark = os.getpid(), f"MINIBAM_GRADE_TOKEN={token}".encode()
    alive = []
    for pid, _, owner in _processes():
        if pid == me or _zombie(pid):
            continue
        if (uid >= 0 and owner == uid) or _carries(pid, mark):
            alive.append(pid)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


_MIDDLES: set[int] = set()  # the middle processes, waited for by their own Popen


def _reap_orphans() -> None:
    """Wait for our zombie children that are not ours by Popen: workers re-parented to us."""
    me = os.getpid()
    for pid, ppid, _ in _processes():
        if ppid == me and pid not in _MIDDLES and _zombie(pid):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def sweep(token: str, uid: int) -> None:
    """End every process of a submission, however it detached."""
    for _ in range(200):
        alive = leftovers(token, uid)
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    _reap_orphans()


class Subreaper:
    """While grading, orphans of our descendants are re-parented to the grader (Linux)."""

    PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

    def __enter__(self) -> Subreaper:
        self.before = None
        if sys.platform.startswith("linux"):
            try:
                self.libc = ctypes.CDLL(None, use_errno=True)
                value = ctypes.c_int(0)
                self.libc.prctl(self.PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0)
                self.before = value.value
                self.libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            except (OSError, AttributeError):
                self.before = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.before is not None:
            self.libc.prctl(self.PR_SET_CHILD_SUBREAPER, self.before, 0, 0, 0)


@dataclass
class Identity:
    """Who a submission's worker runs as, and the token in its environment."""

    uid: int
    gid: int
    token: str


# Tests set this to grade as root the way an ordinary user grades (no user id of its own).
_same_user = False


def new_identity() -> Identity:
    token = secrets.token_hex(12)
    if os.geteuid() != 0 or _same_user:
        return Identity(-1, -1, token)
    taken = {uid for _, _, uid in _processes()}
    while True:  # a user id no process has: from 2**30 up, far above real accounts
        uid = 2**30 + secrets.randbelow(2**30)
        if uid not in taken:
            return Identity(uid, uid, token)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"its middle process was killed by signal {-code}"
    if code > 128:
        return f"killed by signal {code - 128}" + (" (out of memory?)" if code - 128 == 9 else "")
    return f"exit status {code}"


class Worker:
    """One worker process and its channel."""

    def __init__(self, folder: Path, memory_mb: int, who: Identity) -> None:
        request_r, self.request_w = os.pipe()
        self.reply_r, reply_w = os.pipe()
        os.set_blocking(self.request_w, False)
        import minibam

        here = str(Path(minibam.__file__).resolve().parent.parent)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL") or k.startswith("MINIBAM_")}
        env |= {"PYTHONPATH": here, "HOME": str(folder), "TMPDIR": str(folder), "PYTHONDONTWRITEBYTECODE": "1",
                "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "MINIBAM_GRADE_TOKEN": who.token}
        command = [sys.executable, "-m", "minibam.exercises.worker", str(request_r), str(reply_w),
                   str(memory_mb), str(who.uid), str(who.gid)]
        try:
            self.middle = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.DEVNULL, pass_fds=(request_r, reply_w),
                                           cwd=folder, env=env, start_new_session=True)
        finally:
            os.close(request_r)
            os.close(reply_w)
        _MIDDLES.add(self.middle.pid)
        self.who, self.pid = who, None
        self.reader = channel.Reader(self.reply_r, ANSWER_BUDGET)
        line = self.middle.stdout.readline()  # the middle forks at once and says the pid
        self.pid = int(line) if line.strip().isdigit() else None

    def send(self, message: dict[str, Any], values: dict[str, Any] | None, deadline: float) -> None:
        channel.send(self.request_w, message, values, deadline)

    def frame(self, deadline: float, op: str) -> tuple[dict[str, Any], list[np.ndarray]]:
        message, arrays = self.reader.frame(deadline)
        if message.get("op") != op:
            raise channel.ProtocolError(f"expected a {op!r} message, got {str(message.get('op'))[:40]!r}")
        return message, arrays

    def end(self, settle: float = 0.0) -> str:
        """End the worker and everything it started; how it had ended, in words.
        ``settle``: seconds to let a worker that is ending report its status first."""
        try:
            code = self.middle.wait(timeout=settle) if settle else self.middle.poll()
        except subprocess.TimeoutExpired:
            code = None
        for pid in (self.pid,):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            os.killpg(self.middle.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        sweep(self.who.token, self.who.uid)
        try:
            self.middle.wait(timeout=10)
            _MIDDLES.discard(self.middle.pid)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self.request_w, self.reply_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.middle.stdout.close()
        return _exit_text(code if code is not None else self.middle.returncode)
