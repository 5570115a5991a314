"""minibam check: every op and attention module against finite differences (and PyTorch if installed)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from minibam.cli._common import UsageError, err, int_at_least, optional_torch, say


def run(args: argparse.Namespace) -> int:
    from minibam.checks import FD_TOL, TORCH_TOL, all_cases, run_case

    torch = None if args.no_torch else optional_torch()
    cases = all_cases(args.thorough)
    if args.only:
        cases = [c for c in cases if any(word.lower() in c.op.lower() for word in args.only)]
        if not cases:
            raise UsageError(f"no check matches {' or '.join(map(repr, args.only))}")
    show = (lambda *parts: None) if args.json else say
    show(f"minibam check: {len(cases)} cases, seed {args.seed} (each case seeded by its name); "
         f"finite differences in float64 (pass: rel err <= {FD_TOL:.0e})")
    if torch is not None:
        show(f"PyTorch {torch.__version__}: comparing output, gradients and running buffers "
             f"in float64 (pass: rel err <= {TORCH_TOL:.0e})")
    else:
        reason = "--no-torch" if args.no_torch else "torch is not installed"
        show(f"PyTorch comparison skipped ({reason})")
    show("rel err = max |minibam - reference| / max |reference| for the output and each gradient "
         "(a gradient that is zero by construction: / its case's largest gradient); the worst is shown\n")
    header = f"{'#':>5}  {'op':<18} {'shapes':<58} {'vs FD':>8} {'vs torch':>9}  result"
    show(header)
    show("-" * len(header))
    start = time.perf_counter()
    results = []
    tty = sys.stderr.isatty() and not args.json
    for i, case in enumerate(cases, 1):
        if tty:
            print(f"  running {case.op} ...", end="\r", file=sys.stderr, flush=True)
        result = run_case(case, args.seed, torch)
        results.append(result)
        if tty:
            print(" " * 40, end="\r", file=sys.stderr, flush=True)
        torch_text = "skipped" if torch is None else err(result.torch_error)
        verdict = "pass" if result.passed else "FAIL"
        show(f"{f'{i}/{len(cases)}':>5}  {case.op:<18} {case.shapes:<58} "
             f"{err(result.fd_error):>8} {torch_text:>9}  {verdict} ({result.seconds:.2f} s)")
    failed = [r for r in results if not r.passed]
    elapsed = time.perf_counter() - start
    if args.json:
        say(json.dumps({
            "passed": not failed, "seed": args.seed, "thorough": args.thorough,
            "torch": None if torch is None else torch.__version__, "fd_tol": FD_TOL,
            "torch_tol": None if torch is None else TORCH_TOL, "seconds": round(elapsed, 3),
            "rows": [r.to_dict() for r in results],
        }))
        return 1 if failed else 0
    say("")
    for r in failed:
        if r.failure is not None:
            why = r.failure.splitlines()[0]
        else:
            why = f"worst vs FD: {r.fd_worst} {err(r.fd_error)}"
            if r.torch_error is not None:
                why += f"; worst vs torch: {r.torch_worst} {err(r.torch_error)}"
        say(f"FAIL {r.case.op} [{r.case.shapes}]: {why}")
    if failed:
        say(f"{len(failed)} of {len(results)} checks FAILED ({elapsed:.1f} s)")
        return 1
    say(f"all {len(results)} checks passed ({elapsed:.1f} s)")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check", help="finite-difference (and PyTorch) checks of every op and attention module",
        description="Check the backward pass of every op and of every attention module (BAM in "
                    "both variants, CBAM, ...) against central finite differences in float64, with a random "
                    "upstream gradient, and against PyTorch in float64 when it is installed. "
                    "Each case draws its inputs from a seed derived from --seed and its name, "
                    "so a case gives the same numbers alone (-k) as in the full run.",
    )
    parser.add_argument("--thorough", action="store_true", help="many more cases (slower)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("-k", "--only", action="append", metavar="OP",
                        help="only the ops whose name contains OP (repeatable), e.g. -k conv2d")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (passed, rows: one per case with every compared array)")
    parser.set_defaults(run=run)
