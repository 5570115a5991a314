"""minibam reference: write a self-contained .npz case for checking another BAM (or CBAM, ...)."""

from __future__ import annotations

import argparse

from minibam.cli._common import (
    DTYPES,
    UsageError,
    int_at_least,
    module_flags,
    module_values,
    say,
    shape_str,
    shape_type,
)


def run(args: argparse.Namespace) -> int:
    from minibam import modules
    from minibam.checks import reference

    n, h, w = args.shape
    try:
        config = modules.config_from_flags(args.module, args.channels, module_values(args),
                                           training=not args.eval, dtype=args.dtype)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        reference.check_fits(config, (n, args.channels, h, w))
    except ValueError as error:
        raise UsageError(f"--channels/--shape: {error}") from None
    try:
        config.build()
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    try:
        arrays = reference.make_reference(config, n, h, w, args.seed)
    except ValueError as error:  # the module refuses the input, e.g. a batch of one in training mode
        raise UsageError(f"--shape {n},{h},{w}: {error}") from None
    try:
        reference.save_arrays(args.out, arrays)
    except OSError as error:
        raise UsageError(f"cannot write {args.out}: {error.strerror or error}") from None
    counts = {p: sum(k.startswith(p + ".") for k in arrays) for p in ("param", "grad", "after", "meta")}
    say(f"wrote {args.out}: {len(arrays)} arrays (x, dy, y, dx, {counts['param']} param.*, "
        f"{counts['grad']} grad.*, {counts['after']} after.*, {counts['meta']} meta.*)")
    say(f"  {config.describe()}, x {shape_str(arrays['x'].shape)}, seed {args.seed}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    from minibam import modules

    parser = commands.add_parser(
        "reference", help="write a .npz reference case for checking another BAM (or CBAM, ...)",
        description="Build a BAM (or with --module another attention module) with seeded random weights "
                    "and BatchNorm state, run one forward and backward pass, and write x, dy, y, dx, "
                    "param.<name> (before the pass), grad.<name>, after.<buffer> and meta.<field> to one .npz.",
    )
    parser.add_argument("--channels", type=int_at_least(1), required=True, metavar="C",
                        help="the input's channels C (BAM's gate_channel)")
    parser.add_argument("--shape", type=shape_type("NHW"), required=True, metavar="N,H,W",
                        help="batch size and spatial size, e.g. 4,8,8")
    parser.add_argument("--module", choices=modules.names(), default=modules.names()[0],
                        help=f"default: {modules.names()[0]}")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="default 0")
    parser.add_argument("--eval", action="store_true", help="evaluation mode (default: training)")
    parser.add_argument("--dtype", choices=DTYPES, default="float64", help="default: float64")
    parser.add_argument("--out", required=True, metavar="FILE", help="the .npz to write")
    module_flags(parser, "reference")
    parser.set_defaults(run=run)
