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
                             "cases": len(e.make_cases(__import__("numpy").random.default_rng(0))),
                             "mistakes": [m.name for m in e.mistakes]} for e in EXERCISES], indent=1))
            return 0
        width = max(len(e.name) for e in EXERCISES)
        for number, e in enumerate(EXERCISES, 1):
            say(f"{number:>2}. {e.name:<{width}}  {e.title}  ({len(e.mistakes)} known mistakes; docs/{e.doc})")
        return 0
    from minibam.exercises.workbook import write_workbook

    try:
        written = write_workbook(args.dir)
    except (FileExistsError, NotADirectoryError, PermissionError) as error:
        raise UsageError(str(error)) from None
    for path in written:
        say(f"wrote {path}: {len(EXERCISES)} exercises; open it with Jupyter and start at the top")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "exercises", help="exercises: write each backward pass yourself (list, start DIR)",
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
    parser.set_defaults(run=run)
