"""minibam bench: time BAM forward + backward beside PyTorch."""

from __future__ import annotations

import argparse

import numpy as np

from minibam.cli._common import (
    DTYPES,
    UsageError,
    check_bam_fits,
    int_at_least,
    optional_torch,
    say,
    shape_str,
    shape_type,
)
from minibam.nn.bam import VARIANTS


def run(args: argparse.Namespace) -> int:
    from minibam import bench

    shapes = args.shapes or (bench.QUICK_SHAPES if args.quick else bench.RESNET50_SHAPES)
    repeat = args.repeat or (2 if args.quick else 5)
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    for shape in shapes:
        if shape[1] % min(args.reduction, shape[1]):
            raise UsageError(f"shape {shape_str(shape)}: C={shape[1]} is not divisible by the "
                             f"reduction ratio {args.reduction} (--reduction)")
        if shape[0] < 2:
            raise UsageError(f"shape {shape_str(shape)}: training mode needs a batch of at least 2")
        check_bam_fits(shape, shape[1], min(args.reduction, shape[1]), 2, 8, "--shapes")
    torch = None if args.no_torch else optional_torch()
    threads = bench.blas_threads(args.threads)
    say(f"BAM forward + backward, training mode, variant {args.variant}, r={args.reduction}; "
         f"median of {repeat} runs after a warm-up")
    if torch is not None:
        if args.threads or threads:
            torch.set_num_threads(args.threads or threads)
        say(f"NumPy {np.__version__} (BLAS threads: {threads or 'unknown'}) vs PyTorch "
             f"{torch.__version__} (threads: {torch.get_num_threads()}), same weights, interleaved")
    else:
        reason = "--no-torch" if args.no_torch else "torch is not installed"
        say(f"NumPy {np.__version__} (BLAS threads: {threads or 'unknown'}); PyTorch skipped ({reason})")
    header = (f"\n{'shape (N,C,H,W)':<18} {'dtype':<8} {'minibam ms':>11} {'torch ms':>9} "
              f"{'ratio':>6} {'max rel diff':>13}")
    say(header)
    say("-" * (len(header) - 1))
    for shape in shapes:
        for dtype in dtypes:
            t = bench.time_case(shape, dtype, repeat, torch, args.variant, args.reduction, args.seed)
            torch_ms = "-" if t.torch_ms is None else f"{t.torch_ms:.1f}"
            ratio = "-" if t.ratio is None else f"{t.ratio:.2f}"
            diff = "-" if t.max_rel_diff is None else f"{t.max_rel_diff:.1e}"
            say(f"{shape_str(shape):<18} {dtype:<8} {t.minibam_ms:>11.1f} {torch_ms:>9} "
                 f"{ratio:>6} {diff:>13}")
    if torch is not None:
        say("\nratio = minibam / PyTorch (lower is better); max rel diff of y and dx")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench", help="time BAM forward + backward beside PyTorch",
        description="Time BAM forward + backward in training mode at the ResNet-50 "
                    "placements, beside PyTorch (same weights, same thread count) when installed.",
    )
    parser.add_argument("--shapes", type=shape_type("NCHW"), nargs="+", metavar="N,C,H,W",
                       help="default: 4,256,56,56 8,512,28,28 16,1024,14,14 8,64,32,32")
    parser.add_argument("--dtype", choices=(*DTYPES, "both"), default="both", help="default: both")
    parser.add_argument("--repeat", type=int_at_least(1), help="timed runs per case (default 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke test")
    parser.add_argument("--variant", choices=VARIANTS, default="paper", help="default: paper")
    parser.add_argument("--reduction", type=int_at_least(1), default=16, metavar="R",
                       help="reduction_ratio (default 16; C/R at least 1)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="default 0")
    parser.add_argument("--threads", type=int_at_least(1), metavar="T",
                       help="threads for NumPy's BLAS and PyTorch (default: BLAS's own count)")
    parser.add_argument("--no-torch", action="store_true", help="time minibam only")
    parser.set_defaults(run=run)
