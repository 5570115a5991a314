"""minibam compare: run minibam's module (BAM, CBAM, ...) on a reference case and report the
differences, summary first."""

from __future__ import annotations

import argparse
import json

from minibam.cli._common import (
    UsageError,
    module_flags,
    module_values,
    non_negative_float,
    say,
    shape_str,
)


def run(args: argparse.Namespace) -> int:
    from minibam.checks.compare import NOISE_FACTOR, worst
    from minibam.checks.reference import ReferenceFileError
    from minibam.checks.replay import compare_file

    training = True if args.train else False if args.eval else None
    try:
        result = compare_file(args.file, module_values(args, by="key"), training, args.rtol, args.atol)
    except ReferenceFileError as error:
        raise UsageError(f"{args.file}: {error}") from None
    if args.json:
        say(json.dumps(result.to_dict()))
        return 0 if result.passed else 1

    rows, failed, dtype = result.rows, result.failed, result.config.dtype
    verdict = (f"FAIL: {len(failed)} of {len(rows)} arrays differ beyond tolerance" if failed
               else f"PASS: all {len(rows)} arrays agree")
    say(f"minibam compare {args.file}: {verdict}")
    say(f"  {result.config.describe()}, x {shape_str(result.x_shape)}")
    for line in result.overrides + result.shown_notes():
        say(f"  note: {line}")
    for r in failed[:3] or [worst(rows)]:
        say(f"  {'worst' if not failed else 'differs'}: {r.name} {shape_str(r.shape)}, max rel {r.max_rel:.1e}, "
            f"{r.mismatched} of {r.size} elements beyond tolerance (at {list(r.worst_index)}: "
            f"file {r.actual:.6g}, minibam {r.expected:.6g})")
    if len(failed) > 3:
        say(f"  ... and {len(failed) - 3} more: {', '.join(r.name for r in failed[3:8])}"
            + (", ..." if len(failed) > 8 else ""))
    for hint in result.hints:
        say(f"  hint: {hint}")
    defaults = "" if args.rtol is not None or args.atol is not None else \
        f", {dtype} defaults of torch.testing.assert_close"
    low = f" + {NOISE_FACTOR:g} x minibam's own {dtype} round-off" if dtype.name != "float64" else ""
    say(f"  pass: |file - minibam| <= atol + rtol * |minibam|{low} element-wise (rtol={result.rtol:g}, "
        f"atol={result.atol:g}{defaults}); a gradient that is zero by construction is judged on the "
        f"largest gradient's scale")
    if result.not_compared:
        say(f"  not in the file, so not compared: {', '.join(result.not_compared)}")
    if args.verbose:
        width = max(len(r.name) for r in rows)
        header = f"\n{'array':<{width}}  {'shape':<16} {'max abs diff':>12} {'max rel diff':>12} {'mismatched':>12}"
        say(header + "  result")
        say("-" * (len(header) + 7))
        for r in rows:
            say(f"{r.name:<{width}}  {shape_str(r.shape):<16} {r.max_abs:>12.2e} {r.max_rel:>12.2e} "
                f"{f'{r.mismatched}/{r.size}':>12}  {'pass' if r.passed else 'FAIL'}")
    else:
        say(f"  ({len(rows)} arrays compared; --verbose for the full table)")
    return 1 if failed else 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare", help="run minibam's BAM (or CBAM, ...) on a reference .npz and report differences",
        description="Rebuild minibam's module (BAM, CBAM, ...: told by meta.format or the parameter names) "
                    "from a reference case (written by 'minibam reference' or by any code in the same "
                    "format, e.g. a PyTorch BAM), run forward and backward with its x and dy, and compare "
                    "y, dx, every grad.<name> and after.<buffer> with the file. Prints the verdict and the "
                    "worst arrays first, with hints at the likely cause.",
    )
    parser.add_argument("file", metavar="FILE", help="the .npz reference case")
    parser.add_argument("--rtol", type=non_negative_float,
                        help="default: torch.testing.assert_close's for the file's dtype (1e-7 float64, 1.3e-6 float32)")
    parser.add_argument("--atol", type=non_negative_float, help="default: 1e-7 (float64), 1e-5 (float32)")
    module_flags(parser, "compare")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="the file was made in training mode")
    mode.add_argument("--eval", action="store_true", help="the file was made in evaluation mode")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: passed, rows (one per array), notes, hints")
    parser.add_argument("--verbose", action="store_true", help="the full table of every array")
    parser.set_defaults(run=run)
