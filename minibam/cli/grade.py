"""minibam grade: grade student workbooks; the student code runs in worker processes, the grader judges."""

from __future__ import annotations

import argparse
import json
import time

from minibam.cli._common import UsageError, int_at_least, say


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from minibam.exercises.grader import grade, one_line

    start = time.perf_counter()
    try:
        rows = grade(args.paths, timeout=args.timeout, memory_mb=args.memory, jobs=args.jobs)
    except ValueError as error:
        raise UsageError(str(error)) from None
    failed = [r for r in rows if not r.passed]
    if args.json:
        say(json.dumps([r.to_dict() for r in rows], indent=1))
        return 1 if failed else 0
    # A folder name may hold a newline or a terminal escape: shown escaped, one row per line.
    rows = [type(r)(one_line(r.submission), r.exercise, r.passed, one_line(r.reason)) for r in rows]
    width = max(len(r.submission) for r in rows)
    name_width = max(len(r.exercise) for r in rows)
    say(f"{'submission':<{width}}  {'exercise':<{name_width}}  result  reason")
    for r in rows:
        say(f"{r.submission:<{width}}  {r.exercise:<{name_width}}  {'pass' if r.passed else 'FAIL':<6}  {r.reason}")
    say("")
    for submission in dict.fromkeys(r.submission for r in rows):
        mine = [r for r in rows if r.submission == submission]
        say(f"{submission}: {sum(r.passed for r in mine)} of {len(mine)} exercises passed")
    say(f"graded {len(rows) // max(len(set(r.exercise for r in rows)), 1)} submission(s) "
        f"in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    from minibam.exercises.grader import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT

    parser = commands.add_parser(
        "grade", help="grade student workbooks (one row per student and exercise)",
        description="Grade workbooks written by 'minibam exercises start': PATH is a notebook, a "
                    "folder holding a student's notebooks, or a folder of such folders (one per "
                    "student). Each submission is copied to a private folder and its code runs in a "
                    "worker process under a time limit per exercise and a memory limit; the grader "
                    "sends the inputs, judges the returned arrays itself and never reads what a "
                    "notebook printed. See docs/exercises.md for what it guards against.",
        epilog="Exit status: 0 every exercise passed, 1 any failed, 2 bad input.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--json", action="store_true",
                        help="a JSON list of rows {submission, exercise, passed, reason}")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"time limit per exercise, and for running the notebook's cells "
                             f"(default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--memory", type=int_at_least(256), default=DEFAULT_MEMORY_MB, metavar="MB",
                        help=f"address-space limit of a submission's worker in MB; it may start no other "
                             f"process (default {DEFAULT_MEMORY_MB})")
    parser.add_argument("--jobs", type=int_at_least(1), default=None,
                        help="submissions graded at once (default: the number of CPUs)")
    parser.set_defaults(run=run)
