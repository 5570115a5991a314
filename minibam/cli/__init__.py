"""The ``minibam`` command (also ``python -m minibam``): one module per command, each with
``add_parser`` and ``run``; this package only parses and prints, the work lives in the subsystems.

    minibam check      every op and attention module against finite differences (and PyTorch)
    minibam reference  write a self-contained .npz case for checking another BAM (CBAM, ...)
    minibam compare    run minibam's module on such a case and report the differences
    minibam verify     check a PyTorch BAM from a Python file: which variant, and where it departs
    minibam bench      time BAM forward + backward beside PyTorch
    minibam exercises  list the exercises, or write a student workbook
    minibam grade      grade student workbooks, each in its own process

Exit status: 0 when everything passed, 1 when a check or comparison failed, 2 for bad
input (arguments, files): then one line on stderr, never a traceback. PyTorch is
imported only by the commands that use it, and only if it is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from minibam import __version__
from minibam.cli import bench, check, compare, exercises, grade, reference, verify
from minibam.cli._common import Parser, UsageError, discard_stdout, parse_shape

__all__ = ["UsageError", "build_parser", "main", "parse_shape"]

COMMANDS = (check, reference, compare, verify, bench, exercises, grade)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="minibam",
        description="BAM from scratch in NumPy: check every gradient, write and compare "
                    "reference cases, time BAM beside PyTorch.",
        epilog="Exit status: 0 all passed, 1 a check failed, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"minibam {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1, or 2 for bad input)."""
    command = "minibam"
    try:
        args = build_parser().parse_args(argv)
        command = f"minibam {args.command}"
        return int(args.run(args))
    except UsageError as error:
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"{error.prog or command}: error: {message}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help and --version end here
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output goes through _common.say, which carries on to the command's own verdict
        # when the reader leaves (minibam check | head -1). A broken pipe that still gets
        # here stopped the command before its verdict: not a pass.
        discard_stdout()
        return 1


if __name__ == "__main__":
    sys.exit(main())
