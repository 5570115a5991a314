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
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


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


# Full-size (N, C, H, W) arrays alive at once in a BAM forward + backward with its
# reference copies (x, dy, y, dx, the attention map and its temporaries), a generous
# count: the check is meant to stop requests that are absurd, not ones that are tight.
_BAM_FULL_SIZE_ARRAYS = 12


def check_bam_fits(shape: Sequence[int], channels: int, reduction: int, dilated: int,
                   itemsize: int, option: str) -> None:
    """``UsageError`` (one line, exit 2) when a BAM pass on (N, C, H, W) = ``shape`` could
    not fit in this machine's memory; called before anything is allocated."""
    from minibam.ops._checks import describe_limit, memory_limit

    n, c, h, w = shape
    hidden = max(channels // max(reduction, 1), 1)
    elements = (
        _BAM_FULL_SIZE_ARRAYS * n * c * h * w  # feature maps
        + (4 + 9 * dilated) * n * hidden * h * w  # spatial branch, with 3x3 im2col columns
        + 2 * channels * hidden + 9 * dilated * hidden * hidden  # the weights
    )
    needed, limit = elements * itemsize, memory_limit()
    if needed > limit:
        raise UsageError(
            f"{option}: BAM on {shape_str(shape)} with C/r = {hidden} would need about "
            f"{needed / 2**30:.3g} GiB, more than {describe_limit(limit)}"
        )


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
