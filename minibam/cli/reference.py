"""minibam reference: write a self-contained .npz case for checking another BAM (or CBAM)."""

from __future__ import annotations

import argparse

import numpy as np

from minibam.cli._common import (
    DTYPES,
    UsageError,
    check_bam_fits,
    int_at_least,
    say,
    shape_str,
    shape_type,
)
from minibam.nn.bam import VARIANTS


def run(args: argparse.Namespace) -> int:
    from minibam.checks.reference import BamConfig, make_reference, save_arrays
    from minibam.checks.reference_cbam import CbamConfig, make_cbam_reference

    n, h, w = args.shape
    cbam = args.module == "cbam"
    if not cbam and (args.pool_types is not None or args.no_spatial):
        raise UsageError("--pool-types and --no-spatial are CBAM's options: add --module cbam")
    # CBAM's layers are a subset of a BAM's without dilated convolutions: the same bound holds
    check_bam_fits((n, args.channels, h, w), args.channels, args.reduction, 0 if cbam else args.dilation_conv_num,
                   np.dtype(args.dtype).itemsize, "--channels/--shape")
    if cbam:
        pools = tuple((args.pool_types or "avg,max").split(","))
        config = CbamConfig(args.channels, args.reduction, pools, args.no_spatial, training=not args.eval,
                            dtype=np.dtype(args.dtype))
    else:
        config = BamConfig(args.channels, args.reduction, args.dilation_conv_num, args.dilation,
                           args.variant, training=not args.eval, dtype=np.dtype(args.dtype))
    try:
        config.build()
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if config.training and (n < 2 if not cbam else n * h * w < 2 and not args.no_spatial):
        raise UsageError(f"--shape {args.shape[0]},{h},{w}: training mode needs more than one value per "
                         f"batch-norm channel (a batch of at least 2); use a larger shape or --eval")
    arrays = make_cbam_reference(config, n, h, w, args.seed) if cbam else make_reference(config, n, h, w, args.seed)
    try:
        save_arrays(args.out, arrays)
    except OSError as error:
        raise UsageError(f"cannot write {args.out}: {error.strerror or error}") from None
    counts = {p: sum(k.startswith(p + ".") for k in arrays) for p in ("param", "grad", "after", "meta")}
    say(f"wrote {args.out}: {len(arrays)} arrays (x, dy, y, dx, {counts['param']} param.*, "
         f"{counts['grad']} grad.*, {counts['after']} after.*, {counts['meta']} meta.*)")
    say(f"  {config.describe()}, x {shape_str(arrays['x'].shape)}, seed {args.seed}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "reference", help="write a .npz reference case for checking another BAM (or CBAM)",
        description="Build a BAM (or with --module cbam a CBAM) with seeded random weights and BatchNorm state, run one "
                    "forward and backward pass, and write x, dy, y, dx, param.<name> (before "
                    "the pass), grad.<name>, after.<buffer> and meta.<field> to one .npz.",
    )
    parser.add_argument("--channels", type=int_at_least(1), required=True, metavar="C", help="gate_channel C")
    parser.add_argument("--shape", type=shape_type("NHW"), required=True, metavar="N,H,W",
                     help="batch size and spatial size, e.g. 4,8,8")
    parser.add_argument("--module", choices=("bam", "cbam"), default="bam", help="default: bam")
    parser.add_argument("--variant", choices=VARIANTS, default="paper", help="BAM's variant (default: paper)")
    parser.add_argument("--pool-types", default=None, metavar="P,P",
                        help="CBAM's pools, from avg, max, lp, lse (default: avg,max)")
    parser.add_argument("--no-spatial", action="store_true", help="CBAM without its spatial gate")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="default 0")
    parser.add_argument("--eval", action="store_true", help="evaluation mode (default: training)")
    parser.add_argument("--dtype", choices=DTYPES, default="float64", help="default: float64")
    parser.add_argument("--reduction", type=int_at_least(1), default=16, metavar="R",
                     help="reduction_ratio (default 16)")
    parser.add_argument("--dilation-conv-num", type=int_at_least(0), default=2, metavar="K",
                     help="number of dilated 3x3 convs (default 2)")
    parser.add_argument("--dilation", type=int_at_least(1), default=4, metavar="D",
                     help="dilation_val (default 4)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the .npz to write")
    parser.set_defaults(run=run)
