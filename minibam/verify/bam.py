"""``verify.bam``: is a user's PyTorch BAM right, which BAM is it, and where does it go wrong?

    report = verify.bam(MyBAM(64))
    report.passed, report.variant, report.closest, report.first_divergence

The BAM-specific part: placing the user's parameters under minibam's names (the
authors' names as they are, ``key_map``, or by structure), the fingerprint (C, r, the
dilated convs and their dilation, read from the module) and the known variants
(`minibam.verify.bam_variants`). Copying, randomising, running and comparing are
the generic `minibam.verify.harness`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from minibam.checks.compare import compare, default_tolerance
from minibam.nn import BatchNorm1d, BatchNorm2d
from minibam.verify import harness
from minibam.verify.bam_variants import (
    KNOWN,
    SPECS,
    VARIANTS,
    Variant,
    build,
    previous_step,
    run_variant,
)
from minibam.verify.report import Candidate, Report, raised_report

CH, SP = "channel_att.gate_c.", "spatial_att.gate_s."
_BN_AFTER = {
    CH + "gate_c_fc_0": CH + "gate_c_bn_1", CH + "gate_c_fc_final": CH + "gate_c_bn_final",
    SP + "gate_s_conv_reduce0": SP + "gate_s_bn_reduce0", SP + "gate_s_conv_final": SP + "gate_s_bn_final",
}


def default_shapes(channels: int) -> list[tuple[int, int, int, int]]:
    """A square map and a non-square one with H < W < 2H (where the released code runs
    but pools only an H x H window)."""
    return [(4, channels, 8, 8), (3, channels, 6, 10)]


def _infer_channels(module: Any) -> int | None:
    """C from the channel MLP: a Linear(C, h) whose partner is a Linear(h, C)."""
    torch = harness.import_torch()
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    for a in linears:
        for b in linears:
            if a is not b and a.in_features == b.out_features and a.out_features == b.in_features \
                    and a.in_features >= a.out_features:
                return int(a.in_features)
    return None


def _local_keys(module: Any) -> list[str]:
    return [k for k, _ in module.named_parameters(recurse=False)] + [k for k, _ in module.named_buffers(recurse=False)]


def _place_by_structure(twin: Any, channels: int, probe: np.ndarray) -> dict[str, str]:
    """Their layer names -> minibam's, from the layer types, shapes and call order."""
    torch = harness.import_torch()
    layers = harness.layers_with_parameters(twin)
    placed: dict[str, str] = {}
    order = harness.call_order(twin, probe)
    problems = [f"{n} (never called)" for n in layers if n not in order]
    hidden, dilated, last = None, 0, None
    for name in order:
        m, ours = layers[name], None
        if isinstance(m, torch.nn.Linear):
            if m.in_features == channels and CH + "gate_c_fc_0" not in placed.values():
                ours, hidden = CH + "gate_c_fc_0", m.out_features
            elif m.out_features == channels and m.in_features == hidden:
                ours = CH + "gate_c_fc_final"
        elif isinstance(m, torch.nn.Conv2d):
            if tuple(m.kernel_size) == (1, 1) and m.in_channels == channels and m.out_channels != 1:
                ours = SP + "gate_s_conv_reduce0"
            elif tuple(m.kernel_size) == (3, 3) and m.in_channels == m.out_channels:
                ours, dilated = SP + f"gate_s_conv_di_{dilated}", dilated + 1
            elif tuple(m.kernel_size) == (1, 1) and m.out_channels == 1:
                ours = SP + "gate_s_conv_final"
        elif harness.is_batch_norm(m) and last is not None:
            ours = _BN_AFTER.get(last, last.replace("_conv_di_", "_bn_di_"))
        if ours is None or ours in placed.values():
            problems.append(f"{name} ({type(m).__name__})")
            continue
        placed[name] = ours
        last = ours if not harness.is_batch_norm(m) else None
    if problems:
        raise ValueError("verify.bam: cannot place these layers of the module among BAM's: "
                         + ", ".join(problems) + "; pass key_map={their_name: minibam_name}")
    return {f"{name}.{k}": f"{placed[name]}.{k}" for name in placed for k in _local_keys(layers[name])}


def _structure(names: dict[str, str], state: Mapping[str, np.ndarray], channels: int) -> tuple[int, int, bool]:
    """(hidden, dilated convs, closing BN) from the placed names; ValueError listing any
    key that does not fit minibam's BAM of that structure."""
    values = list(names.values())
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError("verify.bam: cannot place the module's parameters; placed twice: "
                         + ", ".join(f"{v} (from {', '.join(k for k in names if names[k] == v)})" for v in duplicates))
    ours = {v: state[k] for k, v in names.items()}
    fc0 = ours.get(CH + "gate_c_fc_0.weight")
    if fc0 is None or fc0.ndim != 2 or fc0.shape[1] != channels or channels % fc0.shape[0]:
        raise ValueError(f"verify.bam: no channel_att.gate_c.gate_c_fc_0.weight of shape (C/r, {channels}) "
                         f"among the module's keys ({', '.join(sorted(names)[:6])}, ...); pass key_map")
    hidden, dilated = fc0.shape[0], 0
    while f"{SP}gate_s_conv_di_{dilated}.weight" in ours:
        dilated += 1
    closing = CH + "gate_c_bn_final.weight" in ours or SP + "gate_s_bn_final.weight" in ours
    expected = build(SPECS["paper" if closing else "official"], channels, channels // hidden, dilated, 1).state_dict()
    unplaced = sorted(k for k, v in names.items() if v not in expected)
    missing = sorted(set(expected) - set(ours))
    wrong = sorted(k for k, v in names.items() if v in expected and np.shape(state[k]) != expected[v].shape)
    if unplaced or missing or wrong:
        parts = [f"{label}: {', '.join(keys)}" for label, keys in (
            ("not a BAM key", unplaced), ("BAM keys missing", missing),
            ("wrong shape", wrong)) if keys]
        raise ValueError("verify.bam: cannot place the module's parameters; " + "; ".join(parts))
    return hidden, dilated, closing


def place(twin: Any, channels: int, key_map: Mapping[str, str] | None,
          probe: np.ndarray) -> tuple[dict[str, str], str]:
    """Their state_dict keys -> minibam's, and how they were found."""
    return harness.place("verify.bam", twin, key_map,
                         lambda names, state: _structure(names, state, channels),
                         lambda: _place_by_structure(twin, channels, probe))


def _divergence(steps: list[tuple[str, str, Any]], order: list[str], rows: list[Any]) -> tuple[str, str]:
    """Where a failing case first departs, and why it is said so."""
    for what, ours, row in steps:
        if not row.passed:
            if what == "input":
                return previous_step(ours, order), (
                    f"the input of {ours} differs, max rel {row.max_rel:.1e}, while the layers before agree")
            return ours, f"its output differs, max rel {row.max_rel:.1e}, while its input agrees"
    failed = [r for r in rows if not r.passed]
    if any(r.name.endswith(" y") for r in failed):
        return "combine", "every layer agrees; the output differs only after the branches are combined"
    layers = [r.name.split(" ", 2)[-1] for r in failed if ".weight" in r.name or ".bias" in r.name]
    for name in reversed(order):
        if any(key.startswith(f"grad.{name}.") for key in layers):
            return name, "the forward pass agrees everywhere; this layer's gradient differs (a backward bug)"
    return "combine", "the forward pass agrees; the input gradient differs"


def bam(module: Any, variant: str = "auto", shapes: Sequence[Sequence[int]] | None = None,
        training: Sequence[bool] = (True, False), dtype: str = "float64", dilation_val: int = 4,
        key_map: Mapping[str, str] | None = None, seed: int = 0) -> Report:
    """Check a PyTorch BAM against minibam's known variants (see ``docs/verify.md``).

    Works on a deep copy with random parameters and batch-norm buffers; for each shape
    and mode compares the output, the input gradient under a random upstream gradient,
    every parameter gradient and the buffers after the pass. ``ValueError`` for input
    that cannot be checked (unplaceable keys, wrong output shape, bad arguments). A
    module that raises on a legal input is a wrong module: a failed report whose
    ``raised`` names the case and the exception.
    """
    start = time.perf_counter()
    try:
        return _bam(module, variant, shapes, training, dtype, dilation_val, key_map, seed, start)
    except harness.ModuleRaised as raised:  # before any variant could be compared
        return raised_report("BAM", raised, VARIANTS, dtype, time.perf_counter() - start)


def _bam(module: Any, variant: str, shapes: Sequence[Sequence[int]] | None, training: Sequence[bool],
         dtype: str, dilation_val: int, key_map: Mapping[str, str] | None, seed: int,
         start: float) -> Report:
    modes, shapes = harness.checked_arguments("verify.bam", variant, tuple(SPECS), dtype, training,
                                              shapes, seed)
    twin = harness.working_copy(module, dtype)
    inferred = _infer_channels(twin)
    if shapes and inferred is not None and len(shapes[0]) == 4 and shapes[0][1] != inferred:
        raise ValueError(f"verify.bam: shape {shapes[0]} has C={shapes[0][1]}, the module takes "
                         f"C={inferred} (its channel MLP is Linear({inferred}, ...))")
    channels = int(shapes[0][1]) if shapes else inferred
    if channels is None:
        raise ValueError("verify.bam: cannot tell C from the module (no Linear(C, C/r) with its "
                         "Linear(C/r, C)); pass shapes=[(N, C, H, W)]")
    shapes = [tuple(int(v) for v in s) for s in (shapes or default_shapes(channels))]
    for s in shapes:
        if len(s) != 4 or s[1] != channels or min(s) < 1 or (True in modes and s[0] < 2):
            raise ValueError(f"verify.bam: shape {s} must be (N, C={channels}, H, W) with N >= 2 in training mode")
    probe = np.zeros((2, channels, 8, 8))
    names, how = place(twin, channels, key_map, probe)
    state = harness.numpy_state(twin)
    hidden, dilated, closing = _structure(names, state, channels)
    layer_names = {k.rsplit(".", 1)[0]: v.rsplit(".", 1)[0] for k, v in names.items()}
    ours_to_theirs = {v: k for k, v in layer_names.items()}
    notes = []
    conv = dict(twin.named_modules()).get(ours_to_theirs.get(SP + "gate_s_conv_di_0", ""))
    if conv is not None and getattr(conv, "dilation", None) is not None and int(conv.dilation[0]) != dilation_val:
        notes.append(f"the module's dilated convs use dilation {int(conv.dilation[0])}; "
                     f"checked with it, not dilation_val={dilation_val}")
        dilation_val = int(conv.dilation[0])
    fingerprint = {"C": channels, "r": channels // hidden, "dilated_convs": dilated,
                   "dilation": dilation_val if dilated else None, "closing_bn": closing, "names": how}
    if variant != "auto" and SPECS[variant].closing_bn != closing:
        raise ValueError(f"verify.bam: variant {variant!r} {'has' if SPECS[variant].closing_bn else 'has no'} "
                         f"closing BatchNorms, the module {'has' if closing else 'has none'}")
    candidates = [SPECS[variant]] if variant != "auto" else [v for v in KNOWN if v.closing_bn == closing]

    rng = np.random.default_rng(seed)
    harness.randomise(twin, rng)
    state = harness.numpy_state(twin)
    buffer_keys = {k for k, _ in twin.named_buffers()}
    their_buffers = {k: v for k, v in state.items() if k in buffer_keys}
    our_state = {names[k]: v for k, v in state.items()}
    our_buffers = {names[k]: v for k, v in their_buffers.items()}
    modules = dict(twin.named_modules())
    bn_settings = {ours: (modules[theirs].eps, modules[theirs].momentum)
                   for theirs, ours in layer_names.items() if harness.is_batch_norm(modules[theirs])}
    order = harness.call_order(twin, probe)
    rtol, atol = default_tolerance(np.float64 if dtype == "float64" else np.float32)

    cases, first_raise = harness.run_cases(twin, shapes, modes, seed, dtype, their_buffers, notes)

    results = [_try(spec, channels, hidden, dilated, dilation_val, bn_settings, our_state, our_buffers,
                    cases, names, layer_names, order, rtol, atol, dtype) for spec in candidates]
    passing = [c for c in results if c.passed]
    if len(passing) > 1:
        notes.append("the shapes cannot tell apart: " + ", ".join(c.name for c in passing))
    best = passing[0] if passing else max(results, key=lambda c: (c.steps_agreeing, len(c.rows) - c.failed,
                                                                  -candidates.index(SPECS[c.name])))
    return Report("BAM", bool(passing), passing[0].name if passing else None, best.name,
                  best.first_divergence, best.rows, VARIANTS, fingerprint, results,
                  best.divergence_detail, notes, dtype, time.perf_counter() - start,
                  str(first_raise or ""), first_raise.traceback if first_raise else "")


def _try(spec: Variant, channels: int, hidden: int, dilated: int, dilation_val: int,
         bn_settings: dict[str, tuple[float, Any]], our_state: dict[str, np.ndarray],
         our_buffers: dict[str, np.ndarray], cases: list[tuple], names: dict[str, str],
         layer_names: dict[str, str], order: list[str], rtol: float, atol: float,
         dtype: str) -> Candidate:
    """Every case against one known variant (in float64; for a float32 check also in
    float32, to measure the round-off a correct float32 module has)."""
    def make(precision: Any) -> Any:
        model = build(spec, channels, channels // hidden, dilated, dilation_val)
        for name, m in model.named_modules():
            if isinstance(m, (BatchNorm1d, BatchNorm2d)) and name in bn_settings:
                m.eps, m.momentum = bn_settings[name]
        model.load_state_dict(our_state, strict=True)
        return model.to(precision)

    model = make(np.float64)
    low_model = make(np.float32) if dtype == "float32" else None
    candidate = Candidate(spec.name, [])
    for label, x, dy, mode, theirs in cases:
        if theirs is None:  # the module raised: right only where this variant raises too
            _, _, h, w = x.shape
            expected = spec.pooling == "window" and not h <= w < 2 * h
            candidate.rows.append(compare(f"{label} forward raised{' (as this variant does)' if expected else ''}",
                                          np.array(0.0 if expected else np.nan), np.array(0.0)))
            continue
        if spec.pooling == "window" and not x.shape[2] <= x.shape[3] < 2 * x.shape[2]:
            candidate.rows.append(compare(f"{label} forward ran where this variant raises",
                                          np.array(np.nan), np.array(0.0)))
            continue
        ours = run_variant(model, spec, x, dy, mode, our_buffers)
        low = None if low_model is None else run_variant(
            low_model, spec, x.astype(np.float32), dy.astype(np.float32), mode, our_buffers)
        rows = harness.compare_runs(label, theirs, ours, rtol, atol, names, low)
        steps = harness.step_rows(theirs, ours, order, layer_names, rtol, atol)
        candidate.rows += rows
        agreeing = 0
        for _, _, row in steps:
            if not row.passed:
                break
            agreeing += 1
        candidate.steps_agreeing += agreeing
        if candidate.first_divergence is None and not all(r.passed for r in rows):
            where, why = _divergence(steps, list(ours.steps), rows)
            candidate.first_divergence, candidate.divergence_detail = where, f"{why}; in {label}"
    return candidate
