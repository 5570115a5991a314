"""What every command shares: the bad-input error, argument types and printing."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

DTYPES = ("float32", "float64")


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit status 2."""

    def __init__(self, message: str, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')", self.prog)


def int_at_least(minimum: int) -> Any:
    from minibam.modules import at_least

    return _typed(at_least(minimum))


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def parse_shape(text: str, layout: str) -> tuple[int, ...]:
    """``"4,8,8"`` (or ``"(4, 8, 8)"``, ``"4x8x8"``) -> (4, 8, 8), one positive int per
    letter of ``layout``; ``argparse.ArgumentTypeError`` otherwise."""
    body = text.strip().strip("()[]").replace("x", ",")
    parts = [p.strip() for p in body.split(",")]
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()  # a trailing comma, as in "(4, 8, 8,)"
    valid = len(parts) == len(layout) and all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts)
    if not valid:
        raise argparse.ArgumentTypeError(
            f"expected {len(layout)} positive integers {','.join(layout)} such as "
            f"{','.join({'N': '4', 'C': '64'}.get(letter, '8') for letter in layout)}, got {text!r}"
        )
    return tuple(int(p) for p in parts)


def shape_type(layout: str) -> Any:
    def parse(text: str) -> tuple[int, ...]:
        return parse_shape(text, layout)

    return parse


def module_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add every attention module's options (`minibam.modules`) to ``parser``: all of them
    for ``reference``, for ``compare`` only those a file's parameters cannot show. Each
    defaults to None, "not given"; the module's own default is said in the help."""
    from minibam import modules

    for option, owners in modules.every_option():
        if command == "compare" and not option.compare:
            continue
        whose = " and ".join(d.title for d in owners)
        default = option.default_text or option.text(option.default)
        if command == "compare":
            text = f"{whose}: {option.help}, for a file without meta.{option.key} (else {default})"
        else:
            text = f"{whose}: {option.help}" + ("" if option.switch else f" (default: {default})")
        dest = "module_" + option.flag[2:].replace("-", "_")
        if option.switch:
            parser.add_argument(option.flag, dest=dest, action="store_const", const=True, help=text)
        else:
            parser.add_argument(option.flag, dest=dest, type=_typed(option.parse), choices=option.choices,
                                metavar=option.metavar, help=text)


def module_values(args: argparse.Namespace, by: str = "flag") -> dict[str, Any]:
    """The module options given on the command line (None: not given), by flag or by key."""
    from minibam import modules

    out = {}
    for option, _ in modules.every_option():
        dest = "module_" + option.flag[2:].replace("-", "_")
        if hasattr(args, dest):
            out[option.flag if by == "flag" else option.key] = getattr(args, dest)
    return out


def _typed(parse: Any) -> Any:
    """An `Option`'s parser for argparse: its ValueError becomes argparse's one-line error."""

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    typed.__name__ = getattr(parse, "__name__", "value")
    return typed


def optional_torch() -> Any:
    """The torch module when it is installed and imports, else None."""
    try:
        from minibam import torch_oracle
    except (ImportError, OSError):
        return None
    return torch_oracle.load()


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def say(*parts: Any) -> None:
    """Print to stdout now. When the reader has gone (``minibam check | head -1``), the
    rest of the output goes nowhere and the command carries on to its own verdict, so
    that its exit status (1 for a failure) survives the pipe."""
    try:
        print(*parts, flush=True)
    except BrokenPipeError:
        discard_stdout()


def discard_stdout() -> None:
    """Send whatever is still to be written to stdout to os.devnull (the reader is gone:
    writing again, even Python's own flush at exit, would raise BrokenPipeError)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
