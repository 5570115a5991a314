"""The ``minibam`` command (also ``python -m minibam``).

    minibam check      every op and BAM against finite differences (and PyTorch if installed)
    minibam reference  write a self-contained .npz case for checking another BAM
    minibam compare    run minibam's BAM on such a case and report the differences
    minibam bench      time BAM forward + backward beside PyTorch

Exit status: 0 when everything passed, 1 when a check or comparison failed, 2 for bad
input (arguments, files): then one line on stderr, never a traceback. PyTorch is
imported only by the commands that use it, and only if it is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from minibam import __version__
from minibam.nn.bam import VARIANTS

DTYPES = ("float32", "float64")


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit status 2."""

    def __init__(self, message: str, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')", self.prog)


# ------------------------------------------------------------------ argument types
def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
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


def _shape_type(layout: str) -> Any:
    def parse(text: str) -> tuple[int, ...]:
        return parse_shape(text, layout)

    return parse


# --------------------------------------------------------------------- helpers
def optional_torch() -> Any:
    """The torch module when it is installed and imports, else None."""
    try:
        from minibam import torch_oracle
    except (ImportError, OSError):
        return None
    return torch_oracle.load()


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _say(*parts: Any) -> None:
    print(*parts, flush=True)


# ----------------------------------------------------------------------- check
def run_check(args: argparse.Namespace) -> int:
    from minibam.checks import FD_TOL, TORCH_TOL, all_cases, run_case
    from minibam.checks.runner import GRAD_FLOOR

    torch = None if args.no_torch else optional_torch()
    cases = all_cases(args.seed, args.thorough)
    if args.only:
        cases = [c for c in cases if any(word.lower() in c.op.lower() for word in args.only)]
        if not cases:
            raise UsageError(f"no check matches {' or '.join(map(repr, args.only))}")
    _say(f"minibam check: {len(cases)} cases, seed {args.seed}; finite differences in float64 "
         f"(pass: rel err <= {FD_TOL:.0e})")
    if torch is not None:
        _say(f"PyTorch {torch.__version__}: comparing output, gradients and running buffers "
             f"in float64 (pass: rel err <= {TORCH_TOL:.0e})")
    else:
        reason = "--no-torch" if args.no_torch else "torch is not installed"
        _say(f"PyTorch comparison skipped ({reason})")
    _say(f"rel err = max |minibam - reference| / max |reference| for the output and each gradient "
         f"(a gradient's denominator at least {GRAD_FLOOR:g} x its case's largest); the worst is shown\n")
    header = f"{'#':>5}  {'op':<18} {'shapes':<58} {'vs FD':>8} {'vs torch':>9}  result"
    _say(header)
    _say("-" * len(header))
    start = time.perf_counter()
    results = []
    tty = sys.stderr.isatty()
    for i, case in enumerate(cases, 1):
        if tty:
            print(f"  running {case.op} ...", end="\r", file=sys.stderr, flush=True)
        result = run_case(case, args.seed + i, torch)
        results.append(result)
        if tty:
            print(" " * 40, end="\r", file=sys.stderr, flush=True)
        torch_text = "skipped" if torch is None else _err(result.torch_error)
        verdict = "pass" if result.passed else "FAIL"
        _say(f"{f'{i}/{len(cases)}':>5}  {case.op:<18} {case.shapes:<58} "
             f"{_err(result.fd_error):>8} {torch_text:>9}  {verdict} ({result.seconds:.2f} s)")
    failed = [r for r in results if not r.passed]
    _say("")
    for r in failed:
        if r.failure is not None:
            why = r.failure.splitlines()[0]
        else:
            why = f"worst vs FD: {r.fd_worst} {_err(r.fd_error)}"
            if r.torch_error is not None:
                why += f"; worst vs torch: {r.torch_worst} {_err(r.torch_error)}"
        _say(f"FAIL {r.case.op} [{r.case.shapes}]: {why}")
    elapsed = time.perf_counter() - start
    if failed:
        _say(f"{len(failed)} of {len(results)} checks FAILED ({elapsed:.1f} s)")
        return 1
    _say(f"all {len(results)} checks passed ({elapsed:.1f} s)")
    return 0


# ------------------------------------------------------------------- reference
def run_reference(args: argparse.Namespace) -> int:
    from minibam.checks.reference import BamConfig, make_reference, save_arrays

    n, h, w = args.shape
    config = BamConfig(args.channels, args.reduction, args.dilation_conv_num, args.dilation,
                       args.variant, training=not args.eval, dtype=np.dtype(args.dtype))
    try:
        config.build()
    except ValueError as error:
        raise UsageError(str(error)) from None
    if config.training and n < 2:
        raise UsageError(f"--shape {args.shape[0]},{h},{w}: training mode needs a batch of at least 2 "
                         f"(batch statistics); use N >= 2 or --eval")
    arrays = make_reference(config, n, h, w, args.seed)
    try:
        save_arrays(args.out, arrays)
    except OSError as error:
        raise UsageError(f"cannot write {args.out}: {error.strerror or error}") from None
    counts = {p: sum(k.startswith(p + ".") for k in arrays) for p in ("param", "grad", "after", "meta")}
    _say(f"wrote {args.out}: {len(arrays)} arrays (x, dy, y, dx, {counts['param']} param.*, "
         f"{counts['grad']} grad.*, {counts['after']} after.*, {counts['meta']} meta.*)")
    _say(f"  {config.describe()}, x {_shape_str(arrays['x'].shape)}, seed {args.seed}")
    return 0


# --------------------------------------------------------------------- compare
def run_compare(args: argparse.Namespace) -> int:
    from minibam.checks.reference import (
        DEFAULT_TOLERANCE,
        GRAD_FLOOR,
        NOISE_FACTOR,
        ReferenceFileError,
        compare_reference,
        infer_config,
        load_arrays,
    )

    training = True if args.train else False if args.eval else None
    try:
        arrays = load_arrays(args.file)
        config, notes = infer_config(arrays, args.dilation, training)
        rtol, atol = DEFAULT_TOLERANCE[config.dtype]
        rtol = rtol if args.rtol is None else args.rtol
        atol = atol if args.atol is None else args.atol
        rows = compare_reference(arrays, config, rtol, atol)
    except ReferenceFileError as error:
        raise UsageError(f"{args.file}: {error}") from None
    low = config.dtype != np.float64
    _say(f"minibam compare {args.file}")
    _say(f"  {config.describe()}, x {_shape_str(arrays['x'].shape)}")
    for note in notes:
        _say(f"  note: {note}")
    defaults = "" if args.rtol is not None or args.atol is not None else f" ({config.dtype} defaults)"
    _say(f"  minibam runs in float64; pass: max abs diff <= atol + rtol * scale"
         f"{f' + {NOISE_FACTOR:g} * {config.dtype} noise' if low else ''}, rtol={rtol:g}, atol={atol:g}{defaults}")
    _say(f"  scale = max |file|, for gradients at least {GRAD_FLOOR:g} * the largest gradient; "
         f"max rel diff = max abs diff / scale")
    if low:
        _say(f"  {config.dtype} noise = max |minibam in {config.dtype} - minibam in float64|")
    width = max(len(r.name) for r in rows)
    header = f"\n{'array':<{width}}  {'shape':<16} {'max abs diff':>12} {'max rel diff':>12}"
    header += f" {f'{config.dtype} noise':>13}" if low else ""
    _say(header + "  result")
    _say("-" * (len(header) + 7))
    for r in rows:
        noise = f" {r.noise:>13.2e}" if low else ""
        _say(f"{r.name:<{width}}  {_shape_str(r.shape):<16} {r.max_abs:>12.2e} {r.rel:>12.2e}{noise}  "
             f"{'pass' if r.passed else 'FAIL'}")
    _say("")
    missing = [k for k, _ in config.build().named_parameters() if f"grad.{k}" not in arrays]
    if missing:
        _say(f"not in the file, so not compared: {', '.join('grad.' + k for k in missing)}")
    failed = [r.name for r in rows if not r.passed]
    if failed:
        if notes:
            _say("the file does not say everything about its BAM (see the notes above); if it was "
                 "made another way, say so with --dilation D, --eval or --train")
        names = ", ".join(failed[:4]) + (f" and {len(failed) - 4} more" if len(failed) > 4 else "")
        _say(f"{len(failed)} of {len(rows)} arrays differ beyond tolerance: {names}")
        return 1
    _say(f"all {len(rows)} arrays agree")
    return 0


# ----------------------------------------------------------------------- bench
def run_bench(args: argparse.Namespace) -> int:
    from minibam import bench

    shapes = args.shapes or (bench.QUICK_SHAPES if args.quick else bench.RESNET50_SHAPES)
    repeat = args.repeat or (2 if args.quick else 5)
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    for shape in shapes:
        if shape[1] % min(args.reduction, shape[1]):
            raise UsageError(f"shape {_shape_str(shape)}: C={shape[1]} is not divisible by the "
                             f"reduction ratio {args.reduction} (--reduction)")
        if shape[0] < 2:
            raise UsageError(f"shape {_shape_str(shape)}: training mode needs a batch of at least 2")
    torch = None if args.no_torch else optional_torch()
    threads = bench.blas_threads(args.threads)
    _say(f"BAM forward + backward, training mode, variant {args.variant}, r={args.reduction}; "
         f"median of {repeat} runs after a warm-up")
    if torch is not None:
        if args.threads or threads:
            torch.set_num_threads(args.threads or threads)
        _say(f"NumPy {np.__version__} (BLAS threads: {threads or 'unknown'}) vs PyTorch "
             f"{torch.__version__} (threads: {torch.get_num_threads()}), same weights, interleaved")
    else:
        reason = "--no-torch" if args.no_torch else "torch is not installed"
        _say(f"NumPy {np.__version__} (BLAS threads: {threads or 'unknown'}); PyTorch skipped ({reason})")
    header = (f"\n{'shape (N,C,H,W)':<18} {'dtype':<8} {'minibam ms':>11} {'torch ms':>9} "
              f"{'ratio':>6} {'max rel diff':>13}")
    _say(header)
    _say("-" * (len(header) - 1))
    for shape in shapes:
        for dtype in dtypes:
            t = bench.time_case(shape, dtype, repeat, torch, args.variant, args.reduction, args.seed)
            torch_ms = "-" if t.torch_ms is None else f"{t.torch_ms:.1f}"
            ratio = "-" if t.ratio is None else f"{t.ratio:.2f}"
            diff = "-" if t.max_rel_diff is None else f"{t.max_rel_diff:.1e}"
            _say(f"{_shape_str(shape):<18} {dtype:<8} {t.minibam_ms:>11.1f} {torch_ms:>9} "
                 f"{ratio:>6} {diff:>13}")
    if torch is not None:
        _say("\nratio = minibam / PyTorch (lower is better); max rel diff of y and dx")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="minibam",
        description="BAM from scratch in NumPy: check every gradient, write and compare "
                    "reference cases, time BAM beside PyTorch.",
        epilog="Exit status: 0 all passed, 1 a check failed, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"minibam {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check", help="finite-difference (and PyTorch) checks of every op and of BAM",
        description="Check the backward pass of every op and of BAM (both variants, training "
                    "mode) against central finite differences in float64, with a random "
                    "upstream gradient, and against PyTorch in float64 when it is installed.",
    )
    check.add_argument("--thorough", action="store_true", help="many more cases (slower)")
    check.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the random inputs (default 0)")
    check.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    check.add_argument("-k", "--only", action="append", metavar="OP",
                       help="only the ops whose name contains OP (repeatable), e.g. -k conv2d")
    check.set_defaults(run=run_check)

    ref = commands.add_parser(
        "reference", help="write a .npz reference case for checking another BAM",
        description="Build a BAM with seeded random weights and BatchNorm state, run one "
                    "forward and backward pass, and write x, dy, y, dx, param.<name> (before "
                    "the pass), grad.<name>, after.<buffer> and meta.<field> to one .npz.",
    )
    ref.add_argument("--channels", type=_int_at_least(1), required=True, metavar="C", help="gate_channel C")
    ref.add_argument("--shape", type=_shape_type("NHW"), required=True, metavar="N,H,W",
                     help="batch size and spatial size, e.g. 4,8,8")
    ref.add_argument("--variant", choices=VARIANTS, default="paper", help="default: paper")
    ref.add_argument("--seed", type=_int_at_least(0), default=0, help="default 0")
    ref.add_argument("--eval", action="store_true", help="evaluation mode (default: training)")
    ref.add_argument("--dtype", choices=DTYPES, default="float64", help="default: float64")
    ref.add_argument("--reduction", type=_int_at_least(1), default=16, metavar="R",
                     help="reduction_ratio (default 16)")
    ref.add_argument("--dilation-conv-num", type=_int_at_least(0), default=2, metavar="K",
                     help="number of dilated 3x3 convs (default 2)")
    ref.add_argument("--dilation", type=_int_at_least(1), default=4, metavar="D",
                     help="dilation_val (default 4)")
    ref.add_argument("--out", required=True, metavar="FILE", help="the .npz to write")
    ref.set_defaults(run=run_reference)

    cmp = commands.add_parser(
        "compare", help="run minibam's BAM on a reference .npz and report differences",
        description="Rebuild minibam's BAM from a reference case (written by 'minibam "
                    "reference' or by any code in the same format, e.g. a PyTorch BAM), run "
                    "forward and backward with its x and dy, and compare y, dx, every "
                    "grad.<name> and after.<buffer> with the file.",
    )
    cmp.add_argument("file", metavar="FILE", help="the .npz reference case")
    cmp.add_argument("--rtol", type=_non_negative_float, help="default: 1e-9 (float64), 2e-3 (float32)")
    cmp.add_argument("--atol", type=_non_negative_float, help="default: 1e-12 (float64), 1e-6 (float32)")
    cmp.add_argument("--dilation", type=_int_at_least(1), metavar="D",
                     help="dilation_val, when the file has no meta.dilation_val (else 4)")
    mode = cmp.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="the file was made in training mode")
    mode.add_argument("--eval", action="store_true", help="the file was made in evaluation mode")
    cmp.set_defaults(run=run_compare)

    bench = commands.add_parser(
        "bench", help="time BAM forward + backward beside PyTorch",
        description="Time BAM forward + backward in training mode at the ResNet-50 "
                    "placements, beside PyTorch (same weights, same thread count) when installed.",
    )
    bench.add_argument("--shapes", type=_shape_type("NCHW"), nargs="+", metavar="N,C,H,W",
                       help="default: 4,256,56,56 8,512,28,28 16,1024,14,14 8,64,32,32")
    bench.add_argument("--dtype", choices=(*DTYPES, "both"), default="both", help="default: both")
    bench.add_argument("--repeat", type=_int_at_least(1), help="timed runs per case (default 5; 2 with --quick)")
    bench.add_argument("--quick", action="store_true", help="small shapes, for a smoke test")
    bench.add_argument("--variant", choices=VARIANTS, default="paper", help="default: paper")
    bench.add_argument("--reduction", type=_int_at_least(1), default=16, metavar="R",
                       help="reduction_ratio (default 16; C/R at least 1)")
    bench.add_argument("--seed", type=_int_at_least(0), default=0, help="default 0")
    bench.add_argument("--threads", type=_int_at_least(1), metavar="T",
                       help="threads for NumPy's BLAS and PyTorch (default: BLAS's own count)")
    bench.add_argument("--no-torch", action="store_true", help="time minibam only")
    bench.set_defaults(run=run_bench)
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
    except BrokenPipeError:  # e.g. minibam check | head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
