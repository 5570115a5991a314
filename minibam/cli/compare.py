"""minibam compare: run minibam's BAM (or CBAM) on a reference case and report the differences, summary first."""

from __future__ import annotations

import argparse
import json

from minibam.cli._common import int_at_least, non_negative_float, say, shape_str


def run(args: argparse.Namespace) -> int:
    from minibam.checks.compare import NOISE_FACTOR, default_tolerance, worst
    from minibam.checks.hints import hints
    from minibam.checks.reference import (
        ReferenceFileError,
        compare_reference,
        infer_config,
        load_arrays,
        overrides,
    )
    from minibam.checks.reference_cbam import cbam_hints, infer_cbam_config, is_cbam_case
    from minibam.cli._common import UsageError

    training = True if args.train else False if args.eval else None
    pools = tuple(args.pool_types.split(",")) if args.pool_types else None
    try:
        arrays = load_arrays(args.file)
        cbam = is_cbam_case(arrays)
        if cbam:
            config, notes = infer_cbam_config(arrays, training, pools)
        else:
            config, notes = infer_config(arrays, args.dilation, training)
        rows = compare_reference(arrays, config, args.rtol, args.atol)
    except ReferenceFileError as error:
        raise UsageError(f"{args.file}: {error}") from None
    rtol, atol = default_tolerance(config.dtype)
    rtol = rtol if args.rtol is None else args.rtol
    atol = atol if args.atol is None else args.atol
    failed = [r for r in rows if not r.passed]
    changed = overrides(arrays, None if cbam else args.dilation, training)
    stored_pools = arrays.get("meta.pool_types")
    if cbam and pools is not None and stored_pools is not None and pools != tuple(str(stored_pools).split(",")):
        changed.append(f"--pool-types {','.join(pools)} overrides the file's meta.pool_types = {stored_pools}")
    likely = (cbam_hints(config, notes, rows, pools is not None) if cbam else
              hints(arrays, config, notes, rows, args.rtol, args.atol, args.dilation is not None,
                     training is not None))
    missing = [f"grad.{k}" for k, _ in config.build().named_parameters() if f"grad.{k}" not in arrays]
    if args.json:
        say(json.dumps({
            "passed": not failed, "file": str(args.file), "config": config.describe(),
            "x_shape": list(arrays["x"].shape), "rtol": rtol, "atol": atol,
            "notes": notes, "overrides": changed, "hints": likely, "not_compared": missing,
            "rows": [r.to_dict() for r in rows],
        }))
        return 1 if failed else 0

    verdict = (f"FAIL: {len(failed)} of {len(rows)} arrays differ beyond tolerance" if failed
               else f"PASS: all {len(rows)} arrays agree")
    say(f"minibam compare {args.file}: {verdict}")
    say(f"  {config.describe()}, x {shape_str(arrays['x'].shape)}")
    for line in changed:
        say(f"  note: {line}")
    for note in notes:
        if failed or not note.startswith(("dilation_val not stored", "training not stored", "mode not stored")):
            say(f"  note: {note}")
    failed = sorted(failed, key=lambda r: -r.max_rel)
    for r in failed[:3] or [worst(rows)]:
        say(f"  {'worst' if not failed else 'differs'}: {r.name} {shape_str(r.shape)}, max rel {r.max_rel:.1e}, "
            f"{r.mismatched} of {r.size} elements beyond tolerance (at {list(r.worst_index)}: "
            f"file {r.actual:.6g}, minibam {r.expected:.6g})")
    if len(failed) > 3:
        say(f"  ... and {len(failed) - 3} more: {', '.join(r.name for r in failed[3:8])}"
            + (", ..." if len(failed) > 8 else ""))
    for hint in likely:
        say(f"  hint: {hint}")
    defaults = "" if args.rtol is not None or args.atol is not None else f", {config.dtype} defaults of torch.testing.assert_close"
    low = f" + {NOISE_FACTOR:g} x minibam's own {config.dtype} round-off" if config.dtype.name != "float64" else ""
    say(f"  pass: |file - minibam| <= atol + rtol * |minibam|{low} element-wise (rtol={rtol:g}, atol={atol:g}{defaults}); "
        f"a gradient that is zero by construction is judged on the largest gradient's scale")
    if missing:
        say(f"  not in the file, so not compared: {', '.join(missing)}")
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
        "compare", help="run minibam's BAM (or CBAM) on a reference .npz and report differences",
        description="Rebuild minibam's BAM (or CBAM: told by its parameter names) from a reference case (written by 'minibam "
                    "reference' or by any code in the same format, e.g. a PyTorch BAM), run "
                    "forward and backward with its x and dy, and compare y, dx, every "
                    "grad.<name> and after.<buffer> with the file. Prints the verdict and the "
                    "worst arrays first, with hints at the likely cause.",
    )
    parser.add_argument("file", metavar="FILE", help="the .npz reference case")
    parser.add_argument("--rtol", type=non_negative_float,
                        help="default: torch.testing.assert_close's for the file's dtype (1e-7 float64, 1.3e-6 float32)")
    parser.add_argument("--atol", type=non_negative_float, help="default: 1e-7 (float64), 1e-5 (float32)")
    parser.add_argument("--dilation", type=int_at_least(1), metavar="D",
                        help="dilation_val, when the file has no meta.dilation_val (else 4)")
    mode = parser.add_mutually_exclusive_group()
    parser.add_argument("--pool-types", metavar="P,P",
                        help="a CBAM case's pools, when the file has no meta.pool_types (else avg,max)")
    mode.add_argument("--train", action="store_true", help="the file was made in training mode")
    mode.add_argument("--eval", action="store_true", help="the file was made in evaluation mode")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: passed, rows (one per array), notes, hints")
    parser.add_argument("--verbose", action="store_true", help="the full table of every array")
    parser.set_defaults(run=run)
