"""minibam exercises: list the exercises, or write a student workbook."""

from __future__ import annotations

import argparse
import json

from minibam.cli._common import UsageError, say


def run(args: argparse.Namespace) -> int:
    from minibam.exercises import EXERCISES

    if args.action == "list":
        if args.json:
            say(json.dumps([{"name": e.name, "title": e.title, "doc": f"docs/{e.doc}",
                             "mistakes": [m.name for m in e.mistakes]} for e in EXERCISES], indent=1))
            return 0
        width = max(len(e.name) for e in EXERCISES)
        for number, e in enumerate(EXERCISES, 1):
            say(f"{number:>2}. {e.name:<{width}}  {e.title}  ({len(e.mistakes)} known mistakes; docs/{e.doc})")
        return 0
    if args.action == "mistakes":
        return _show_mistakes(args.names)
    from minibam.exercises.workbook import write_workbook

    if not args.dir:
        raise UsageError("DIR is empty; name the directory to write the workbook into")
    try:
        written = write_workbook(args.dir)
    except (FileExistsError, NotADirectoryError) as error:
        if error.strerror is None:  # write_workbook's own message, naming the file
            raise UsageError(str(error)) from None
        raise UsageError(f"cannot write {args.dir}: {error.strerror}") from None
    except OSError as error:  # unwritable, read-only file system, a missing /proc entry, ...
        raise UsageError(f"cannot write {args.dir}: {error.strerror or error}") from None
    for path in written:
        say(f"wrote {path}: {len(EXERCISES)} exercises; open it with Jupyter and start at the top")
    return 0


def _show_mistakes(names: list[str]) -> int:
    """What a student sees for each catalogued mistake: the checker's real report on it."""
    from minibam.exercises import EXERCISES, find, run_check

    try:
        chosen = [find(name) for name in names] if names else list(EXERCISES)
    except ValueError as error:
        raise UsageError(str(error).removeprefix("check: ")) from None
    for exercise in chosen:
        say(f"## {exercise.name}: {len(exercise.mistakes)} known mistakes\n")
        for mistake in exercise.mistakes:
            say(f"### {mistake.name}\n")
            say(str(run_check(exercise, mistake.wrong, trace=False)))
            say("")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "exercises", help="exercises: write each backward pass yourself (list, start DIR, mistakes)",
        description="Exercises in teaching order: each asks for one backward pass and checks it "
                    "against minibam and finite differences, naming the known mistake when it "
                    "recognises one. 'list' shows them; 'start DIR' writes the student workbook.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every exercise, in teaching order")
    listing.add_argument("--json", action="store_true", help="one JSON list of {name, title, ...}")
    start = actions.add_parser(
        "start", help="write the student workbook into DIR",
        description="Write the workbook (a Jupyter notebook with one stub per exercise) into DIR, "
                    "created if needed. Refuses, writing nothing, if DIR already holds it.")
    start.add_argument("dir", metavar="DIR")
    mistakes = actions.add_parser(
        "mistakes", help="the checker's report on each catalogued mistake",
        description="Feed each known mistake of the named exercises (default: all) to the checker "
                    "and print its report, exactly as a student who made it would see it.")
    mistakes.add_argument("names", nargs="*", metavar="NAME")
    parser.set_defaults(run=run)
