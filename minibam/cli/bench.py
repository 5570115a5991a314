"""minibam bench: time minibam beside PyTorch (or beside another minibam tree), fairly."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from minibam.cli._common import DTYPES, UsageError, int_at_least, say, shape_type
from minibam.nn.bam import VARIANTS

WIDTHS = [22, 8, 16, 16, 9, 11, 12]
TITLES = {
    "bam": "BAM forward + backward, training mode",
    "cbam": "CBAM forward + backward, training mode (pools avg and max)",
    "conv": "conv2d forward + backward (dx, dW, db), padding = dilation",
    "step": "one training step of nn.BAMNet (forward, cross-entropy, backward, Adam)",
    "memory": "peak extra resident memory of one BAM forward + backward, training mode (MiB)",
}


def _torch_available() -> bool:
    """Whether torch is installed, without importing it here (it must not share this
    process's cores with NumPy's threads: each library is timed in a process of its own)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _fmt(value: float, memory: bool) -> str:
    return f"{value:.1f}" if memory else f"{1e3 * value:.1f}"


def _row(m, label: str, memory: bool, markdown: bool) -> str:
    a, b = (s.label for s in m.sides[:2]) if len(m.sides) > 1 else (m.sides[0].label, None)
    cells = [label, m.dtype, f"{_fmt(m.center(a), memory)} ±{100 * m.spread(a):.0f}%"]
    if b is not None:
        cells.append(f"{_fmt(m.center(b), memory)} ±{100 * m.spread(b):.0f}%")
        ratio = m.ratio_of_centers() if memory else m.ratio
        flag = "" if m.trusted else " (!)"
        cells.append("-" if ratio is None else f"{ratio:.2f}{flag}")
        if not memory:
            cells.append(f"{m.min_ratio:.2f}-{m.max_ratio:.2f}" if m.ratios else "-")
            cells.append("-" if m.max_rel_diff is None else f"{m.max_rel_diff:.1e}")
    if markdown:
        return "| " + " | ".join(cells) + " |"
    widths = WIDTHS
    return " ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False)))


def _header(sides: list, memory: bool, markdown: bool, first: str) -> str:
    unit = "MiB" if memory else "ms"
    cells = [first, "dtype", f"{sides[0].label} {unit}"]
    if len(sides) > 1:
        cells += [f"{sides[1].label} {unit}", "ratio"]
        if not memory:
            cells += ["ratio range", "max rel diff"]
    if markdown:
        return "| " + " | ".join(cells) + " |\n|" + " --- |" * len(cells)
    widths = WIDTHS
    line = " ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False)))
    return line + "\n" + "-" * len(line)


def _summary(results: list, markdown: bool) -> None:
    """The README's table: the BAM ratio per shape, float32 and float64 side by side."""
    by_shape: dict[str, dict[str, str]] = {}
    for case, m in results:
        if case.workload == "bam" and m.ratio is not None:
            flag = "" if m.trusted else " (!)"
            by_shape.setdefault(case.label, {})[case.dtype] = f"{m.ratio:.2f}{flag}"
    if not by_shape:
        return
    say("\nBAM forward + backward, minibam / PyTorch (README):\n")
    dtypes = sorted({d for row in by_shape.values() for d in row})
    say("| shape (N, C, H, W) | " + " | ".join(dtypes) + " |")
    say("| --- |" + " --- |" * len(dtypes))
    for label, row in by_shape.items():
        say(f"| {label.replace(',', ', ')} | " + " | ".join(row.get(d, "-") for d in dtypes) + " |")


def _load_line(when: str) -> str:
    """The machine's 1-minute load average, against its core count: above the core
    count other work was waiting for a core, and every time here is inflated."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this system
        return f"load average {when}: unknown"
    cores = os.cpu_count() or 1
    busy = " (busy: more work than cores, times are inflated)" if load > cores else ""
    return f"load average {when}: {load:.1f} on {cores} cores{busy}"


def _check_fits(shape: tuple[int, int, int, int], reduction: int) -> None:
    """A one-line error before anything is allocated when a float64 BAM pass on ``shape``
    (two dilated convs) could not fit in memory."""
    from minibam import modules
    from minibam.checks.reference import check_fits

    config = modules.get("bam").config(shape[1], reduction_ratio=reduction, dilation_conv_num=2)
    try:
        check_fits(config, shape)
    except ValueError as error:
        raise UsageError(f"--shapes: {error}") from None


def run(args: argparse.Namespace) -> int:
    from minibam import bench

    suites = bench.SUITES if args.suite == "all" else (args.suite,)
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    shapes = args.shapes or (bench.QUICK_SHAPES if args.quick else None)
    for shape in shapes or ():
        if "bam" in suites or "memory" in suites:  # (CBAM floors C / r, as its released code)
            if shape[1] % min(args.reduction, shape[1]):
                raise UsageError(f"shape {shape}: C={shape[1]} is not divisible by the reduction "
                                 f"ratio {args.reduction} (--reduction)")
        if shape[0] < 2:
            raise UsageError(f"shape {shape}: training mode needs a batch of at least 2")
        _check_fits(shape, min(args.reduction, shape[1]))
    if args.against:
        other = Path(args.against).resolve()
        if not (other / "minibam" / "__init__.py").is_file():
            raise UsageError(f"--against {args.against}: no minibam package in that directory")
    repeat = args.repeat or (2 if args.quick else 7)
    processes = args.processes or (1 if args.quick else 3)
    threads = args.threads or bench.set_blas_threads() or os.cpu_count() or 1

    plain = (("MINIBAM_FAST", "0"),) if args.plain else ()
    sides = [bench.Side("minibam (plain)" if args.plain else "minibam", "minibam", env=plain)]
    if args.against:
        sides.append(bench.Side(f"minibam@{Path(args.against).name}", "minibam", str(other)))
    elif not args.no_torch and _torch_available():
        sides.append(bench.Side("torch", "torch"))
    say(f"NumPy {np.__version__} ({bench.blas_description()}), {threads} threads a side"
        + ("" if len(sides) > 1 else "; PyTorch skipped ("
           + ("--no-torch" if args.no_torch else "torch is not installed") + ")"))
    settings = bench.allocator_environment(args.allocator, "bam")
    say("allocator, the same on every side: "
        + (" ".join(f"{k}={v}" for k, v in settings.items()) if settings else "glibc's defaults")
        + ("" if "memory" not in suites else "; the memory suite: MALLOC_MMAP_THRESHOLD_=65536"))
    say(f"each side in its own processes, {processes} a side, alternating; a process reports the "
        f"median {args.clock} time of {repeat} timed calls after {args.warmup} warm-up calls")
    say("time = median over processes, ±(max-min)/median; ratio = "
        + (f"{sides[0].label} / {sides[1].label} per round, median and range" if len(sides) > 1 else "-"))
    say(_load_line("at the start"))
    progress = (lambda text: print(f"  ... {text}", file=sys.stderr, flush=True)) if args.verbose else None
    results = []
    for suite in suites:
        memory = suite == "memory"
        first = "case" if suite == "conv" else ("shape (N,1,H,W)" if suite == "step" else "shape (N,C,H,W)")
        say(f"\n{TITLES[suite]}:\n")
        say(_header(sides, memory, args.markdown, first))
        for case in bench.cases(suite, dtypes, shapes if suite in ("bam", "cbam", "memory") else None):
            m = bench.measure(case.workload, case.shape, case.dtype, sides,
                              processes=1 if memory else processes, repeat=repeat, warmup=args.warmup,
                              threads=threads, clock=args.clock, progress=progress, seed=args.seed, variant=args.variant,
                              reduction=args.reduction, allocator=args.allocator)
            results.append((case, m))
            say(_row(m, case.label, memory, args.markdown))
    say("\n" + _load_line("at the end"))
    untrusted = [case for case, m in results if not m.trusted]
    if args.markdown:
        _summary(results, args.markdown)
    if untrusted:
        say(f"\nwarning: (!) the per-round ratios of {len(untrusted)} case(s) spread by more than "
            f"{100 * bench.SPREAD_LIMIT:.0f}% of their median: the machine was too busy to trust "
            f"those ratios; run again on a quieter machine or with more --processes")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench", help="time minibam beside PyTorch, each in its own processes",
        description="Time minibam beside PyTorch (or beside another minibam tree with --against): "
                    "each library runs alone in its own processes, the sides alternate, and each "
                    "time is the median over processes with its spread. `--suite all --markdown` "
                    "prints every table of README.md and docs/performance.md.",
    )
    parser.add_argument("--suite", choices=(*("bam", "cbam", "conv", "step", "memory"), "all"), default="bam",
                        help="bam: BAM forward+backward (default); cbam: CBAM's; conv: BAM's "
                             "convolutions; step: a BAMNet training step; memory: peak memory; all: "
                             "every table")
    parser.add_argument("--shapes", type=shape_type("NCHW"), nargs="+", metavar="N,C,H,W",
                        help="for bam, cbam and memory (default: 8,64,32,32 4,256,56,56 8,512,28,28 "
                             "16,1024,14,14), and step (default: 32,1,32,32)")
    parser.add_argument("--dtype", choices=(*DTYPES, "both"), default="both", help="default: both")
    parser.add_argument("--repeat", type=int_at_least(1), help="timed calls per process (default 7; 2 with --quick)")
    parser.add_argument("--processes", type=int_at_least(1), metavar="P",
                        help="processes per side, alternating (default 3; 1 with --quick)")
    parser.add_argument("--warmup", type=int_at_least(1), default=2, help="untimed calls first (default 2)")
    parser.add_argument("--quick", action="store_true", help="small shapes, one process a side: a smoke test")
    parser.add_argument("--variant", choices=VARIANTS, default="paper", help="default: paper")
    parser.add_argument("--reduction", type=int_at_least(1), default=16, metavar="R",
                        help="BAM's and CBAM's reduction_ratio (default 16; C/R at least 1)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="default 0")
    parser.add_argument("--threads", type=int_at_least(1), metavar="T",
                        help="threads for each side (default: NumPy BLAS's own count)")
    parser.add_argument("--against", metavar="DIR",
                        help="time against the minibam in another source tree DIR instead of PyTorch "
                             "(an A/B test of a change)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time (default); cpu: the process's CPU time, less "
                             "disturbed by a busy machine, for A/B tests with --threads 1")
    parser.add_argument("--no-torch", action="store_true", help="time minibam only")
    parser.add_argument("--allocator", choices=("kept", "default"), default="kept",
                        help="glibc's allocator settings, the same for every side: kept (default; freed "
                             "memory kept for reuse, minibam.backends.allocator's settings) or default")
    parser.add_argument("--plain", action="store_true",
                        help="time minibam's plain path (MINIBAM_FAST=0) instead of its fast kernels")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables, ready to paste")
    parser.add_argument("-v", "--verbose", action="store_true", help="report each process on stderr")
    parser.set_defaults(run=run)
