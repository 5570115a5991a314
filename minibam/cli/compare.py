"""minibam compare: run minibam's BAM on a reference case and report the differences."""

from __future__ import annotations

import argparse

import numpy as np

from minibam.cli._common import UsageError, int_at_least, non_negative_float, say, shape_str


def run(args: argparse.Namespace) -> int:
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
    say(f"minibam compare {args.file}")
    say(f"  {config.describe()}, x {shape_str(arrays['x'].shape)}")
    for note in notes:
        say(f"  note: {note}")
    defaults = "" if args.rtol is not None or args.atol is not None else f" ({config.dtype} defaults)"
    say(f"  minibam runs in float64; pass: max abs diff <= atol + rtol * scale"
         f"{f' + {NOISE_FACTOR:g} * {config.dtype} noise' if low else ''}, rtol={rtol:g}, atol={atol:g}{defaults}")
    say(f"  scale = max |file|, for gradients at least {GRAD_FLOOR:g} * the largest gradient; "
         f"max rel diff = max abs diff / scale")
    if low:
        say(f"  {config.dtype} noise = max |minibam in {config.dtype} - minibam in float64|")
    width = max(len(r.name) for r in rows)
    header = f"\n{'array':<{width}}  {'shape':<16} {'max abs diff':>12} {'max rel diff':>12}"
    header += f" {f'{config.dtype} noise':>13}" if low else ""
    say(header + "  result")
    say("-" * (len(header) + 7))
    for r in rows:
        noise = f" {r.noise:>13.2e}" if low else ""
        say(f"{r.name:<{width}}  {shape_str(r.shape):<16} {r.max_abs:>12.2e} {r.rel:>12.2e}{noise}  "
             f"{'pass' if r.passed else 'FAIL'}")
    say("")
    missing = [k for k, _ in config.build().named_parameters() if f"grad.{k}" not in arrays]
    if missing:
        say(f"not in the file, so not compared: {', '.join('grad.' + k for k in missing)}")
    failed = [r.name for r in rows if not r.passed]
    if failed:
        if notes:
            say("the file does not say everything about its BAM (see the notes above); if it was "
                 "made another way, say so with --dilation D, --eval or --train")
        names = ", ".join(failed[:4]) + (f" and {len(failed) - 4} more" if len(failed) > 4 else "")
        say(f"{len(failed)} of {len(rows)} arrays differ beyond tolerance: {names}")
        return 1
    say(f"all {len(rows)} arrays agree")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare", help="run minibam's BAM on a reference .npz and report differences",
        description="Rebuild minibam's BAM from a reference case (written by 'minibam "
                    "reference' or by any code in the same format, e.g. a PyTorch BAM), run "
                    "forward and backward with its x and dy, and compare y, dx, every "
                    "grad.<name> and after.<buffer> with the file.",
    )
    parser.add_argument("file", metavar="FILE", help="the .npz reference case")
    parser.add_argument("--rtol", type=non_negative_float, help="default: 1e-9 (float64), 2e-3 (float32)")
    parser.add_argument("--atol", type=non_negative_float, help="default: 1e-12 (float64), 1e-6 (float32)")
    parser.add_argument("--dilation", type=int_at_least(1), metavar="D",
                     help="dilation_val, when the file has no meta.dilation_val (else 4)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="the file was made in training mode")
    mode.add_argument("--eval", action="store_true", help="the file was made in evaluation mode")
    parser.set_defaults(run=run)
