"""The one check behind ``verify.bam`` and ``verify.cbam``: read, build, score, report.

    report = check(BAM_KIND, module, ...)

A *kind* (`minibam.verify.bam.KIND`, `minibam.verify.cbam.KIND`) knows one attention
module: how to read its structure from a user's layers (`Reading`), which ways of
combining that structure it must try (`Spec`s: the legitimate choices, then the known
port bugs), how to build minibam's module of a reading and a spec, and what the paper and
the released code have (for the deviations). Everything else is here, once:

1. the caller's module is copied and given random parameters and buffers;
2. every case (shape x mode) runs on the copy, forward hooks recording each layer;
3. each spec's minibam module is built with the copy's weights and runs the same cases,
   its own layers recorded the same way (`harness.run_minibam`);
4. every array is compared (`minibam.checks.compare`), the first layer that departs
   found, and the best spec chosen;
5. the report speaks the user's names: rows, the first divergence and refusals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam.checks.compare import Row, compare, default_tolerance
from minibam.verify import harness
from minibam.verify.reading import Call, before, trace
from minibam.verify.report import Candidate, Report, raised_report


@dataclass(frozen=True)
class Spec:
    """One way of computing the structure read: constructor ``options`` on top of the
    reading's, the named ``variant`` it is (or None), whether a module that matches it
    is right (``correct``), and whether the module may raise on some map sizes where
    minibam's does not (``may_raise``: a pool fixed at construction)."""

    name: str
    options: dict[str, Any]
    variant: str | None
    correct: bool = True
    may_raise: bool = False


@dataclass
class Reading:
    """What a kind read from the user's module."""

    channels: int
    options: dict[str, Any]  # minibam constructor options that the layers fix
    layers: dict[str, str]  # their layer name -> minibam's layer name
    structure: dict[str, Any]  # what the module is, JSON-ready (choices filled in per spec)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Kind:
    """The interface a module's kind fills in (see `minibam.verify.bam.KIND`)."""

    name: str  # "BAM"
    who: str  # "verify.bam"
    variants: dict[str, str]
    combine_step: str  # how the first divergence names the final step
    paper_variant: str  # the variant that is the paper's structure
    released_variant: str  # the variant that is the released code's (with its bugs fixed)

    def read(self, twin: Any, calls: list[Call], channels: int, options: dict[str, Any]) -> Reading:
        raise NotImplementedError

    def specs(self, reading: Reading) -> list[Spec]:
        """The legitimate ways to compute the structure read, in order of preference."""
        raise NotImplementedError

    def bugs(self, reading: Reading, base: Spec) -> list[Spec]:
        """The known port bugs, each as ``base`` with one mistake, tried when no
        legitimate spec matches."""
        return []

    def refuse(self, reading: Reading, variant: str) -> str:
        """Why the named ``variant`` cannot be the module's structure."""
        return f"{self.who}: variant {variant!r} does not fit the module's structure"

    def build(self, reading: Reading, spec: Spec) -> Any:
        raise NotImplementedError

    def describe(self, reading: Reading, spec: Spec) -> dict[str, Any]:
        """The structure with the spec's choices: what ``report.structure`` shows."""
        raise NotImplementedError

    def indistinct(self, a: Spec, b: Spec) -> bool:
        """Whether some shapes cannot tell specs ``a`` and ``b`` apart (then both are tried
        even after one passed, and the report says so)."""
        return False

    def references(self, reading: Reading) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """(the paper's structure, the released code's, a label per field) for deviations."""
        raise NotImplementedError


def deviations(structure: Mapping[str, Any], paper: Mapping[str, Any], released: Mapping[str, Any],
               labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each field where the module differs from the paper or the released code."""
    both, one = [], []
    for key, label in labels.items():
        value, p, r = structure.get(key), paper.get(key), released.get(key)
        if value != p or value != r:
            differs = "paper" if value == r else "released" if value == p else "both"
            same = {"paper": ", as the released code", "released": ", as the paper", "both": ""}[differs]
            (both if differs == "both" else one).append({
                "what": f"{label}: {_text(value)} (paper: {_text(p)}; released code: {_text(r)}){same}",
                "field": key, "module": value, "paper": p, "released": r, "differs_from": differs})
    return both + one


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def check(kind: Kind, module: Any, variant: str, shapes: Sequence[Sequence[int]] | None,
          training: Sequence[bool], dtype: str, key_map: Mapping[str, str] | None, seed: int,
          default_shapes: Callable[[int], list[tuple[int, int, int, int]]],
          options: dict[str, Any] | None = None) -> Report:
    """The whole check of ``module`` as a ``kind`` (see the module docstring)."""
    start = time.perf_counter()
    modes, shapes = harness.checked_arguments(kind.who, variant, tuple(kind.variants), dtype, training,
                                              shapes, seed)
    with harness.session():
        try:
            return _check(kind, module, variant, shapes, modes, dtype, key_map, seed, default_shapes,
                          options or {}, start)
        except harness.ModuleRaised as raised:  # before anything could be compared
            return raised_report(kind.name, raised, kind.variants, dtype, time.perf_counter() - start)


def _channels(kind: Kind, twin: Any, shapes: list[tuple[int, ...]] | None) -> int:
    inferred = harness.input_channels(twin)
    if shapes and inferred is not None and len(shapes[0]) == 4 and shapes[0][1] != inferred:
        raise ValueError(f"{kind.who}: shape {shapes[0]} has C={shapes[0][1]}, the module takes "
                         f"C={inferred} (its widest layer reads {inferred} channels)")
    channels = int(shapes[0][1]) if shapes else inferred
    if channels is None:
        raise ValueError(f"{kind.who}: cannot tell C from the module (no Linear or Conv2d layer); "
                         f"pass shapes=[(N, C, H, W)]")
    return channels


def _check(kind: Kind, module: Any, variant: str, shapes: list[tuple[int, ...]] | None, modes: list[bool],
           dtype: str, key_map: Mapping[str, str] | None, seed: int,
           default_shapes: Callable[[int], list[tuple[int, int, int, int]]], options: dict[str, Any],
           start: float) -> Report:
    twin = harness.working_copy(module, dtype)
    channels = _channels(kind, twin, shapes)
    shapes = [tuple(int(v) for v in s) for s in (shapes or default_shapes(channels))]
    for s in shapes:
        if len(s) != 4 or s[1] != channels or min(s) < 1 or (True in modes and s[0] < 2):
            raise ValueError(f"{kind.who}: shape {s} must be (N, C={channels}, H, W) with N >= 2 "
                             f"in training mode")
    calls = trace(twin, shapes)
    called = {c.name for c in calls}
    unused = [n for n in harness.layers_with_parameters(twin) if n not in called]
    reading = kind.read(twin, calls, channels, options)
    if unused:  # dead weight in the module: reported, not compared
        reading.notes.append("never called in the forward pass, so not compared: " + ", ".join(unused))
    how = "structure (layer types, shapes and call order)"
    if key_map:
        harness.apply_key_map(kind.who, twin, reading.layers, key_map)
        how = "key_map"
    elif all(theirs == ours for theirs, ours in reading.layers.items()):
        how = "the authors' names"
    reading.fingerprint["names"] = how
    legit = kind.specs(reading)
    bug_base = legit[0]
    if variant != "auto":
        if variant in {s.variant for s in kind.bugs(reading, bug_base)}:
            legit = []
        else:
            legit = [s for s in legit if s.variant == variant]
            if not legit:
                raise ValueError(kind.refuse(reading, variant))

    harness.randomise(twin, np.random.default_rng(seed))
    state = {k: v for k, v in harness.numpy_state(twin).items() if k.rsplit(".", 1)[0] not in unused}
    buffer_keys = {k for k, _ in twin.named_buffers()}
    their_buffers = {k: v for k, v in harness.numpy_state(twin).items() if k in buffer_keys}
    notes = list(reading.notes)
    cases, first_raise = harness.run_cases(twin, shapes, modes, seed, dtype, their_buffers, notes)
    rtol, atol = default_tolerance(np.float64 if dtype == "float64" else np.float32)
    scorer = _Scorer(kind, reading, twin, state, their_buffers, calls, cases, rtol, atol, dtype)

    results = []
    for spec in legit:  # once one passes, only what the shapes may not tell apart from it
        match = next((c for c in results if c.passed), None)
        if match is None or kind.indistinct(next(s for s in legit if s.name == match.name), spec):
            results.append(scorer.score(spec))
    bugs: list[Spec] = []
    if not any(c.passed for c in results):
        if results:  # each bug on the legitimate spec that came nearest
            nearest = max(results, key=lambda c: (c.steps_agreeing, len(c.rows) - c.failed))
            bug_base = next(s for s in legit if s.name == nearest.name)
        bugs = [b for b in kind.bugs(reading, bug_base) if variant in ("auto", b.variant)]
        results += [scorer.score(spec) for spec in bugs]
    specs = {s.name: s for s in legit + bugs}
    passing = [c for c in results if c.passed]
    if len(passing) > 1:
        notes.append("the shapes cannot tell apart: " + ", ".join(c.name for c in passing))
    order = [c.name for c in results]
    best = passing[0] if passing else max(results, key=lambda c: (c.steps_agreeing, len(c.rows) - c.failed,
                                                                  -order.index(c.name)))
    spec = specs[best.name]
    structure = kind.describe(reading, spec)
    paper, released, labels = kind.references(reading)
    found = deviations(structure, paper, released, labels)
    passed = bool(passing) and spec.correct
    matched = spec.variant if passing else None
    closest = spec.variant or _nearest(kind, structure, found)
    if passing and not spec.correct:
        reference = next((c for c in results if c.name == bug_base.name and c.first_divergence), None)
        if reference is not None:
            notes.append(f"against {reference.name!r}: {reference.failed} of {len(reference.rows)} arrays "
                         f"differ; first divergence {reference.first_divergence} ({reference.divergence_detail})")
    return Report(kind.name, passed, matched, closest, None if passed else best.first_divergence,
                  best.rows, kind.variants, reading.fingerprint, results, best.divergence_detail, notes,
                  dtype, time.perf_counter() - start, str(first_raise or ""),
                  first_raise.traceback if first_raise else "", structure=structure, deviations=found)


def _nearest(kind: Kind, structure: Mapping[str, Any], found: list[dict[str, Any]]) -> str:
    """The named variant nearest a structure that is none: the paper's or the released
    code's, whichever differs in fewer fields."""
    to_paper = sum(d["module"] != d["paper"] for d in found)
    to_released = sum(d["module"] != d["released"] for d in found)
    return kind.paper_variant if to_paper < to_released else kind.released_variant


class _Scorer:
    """Every case of one spec against the user's runs."""

    def __init__(self, kind: Kind, reading: Reading, twin: Any, state: dict[str, np.ndarray],
                 their_buffers: dict[str, np.ndarray], calls: list[Call], cases: list[tuple],
                 rtol: float, atol: float, dtype: str) -> None:
        self.kind, self.reading, self.twin, self.state = kind, reading, twin, state
        self.their_buffers, self.calls, self.cases = their_buffers, calls, cases
        self.rtol, self.atol, self.dtype = rtol, atol, dtype
        self.order = [c.name for c in calls if c.has_parameters]
        self.order = list(dict.fromkeys(self.order))  # first calls only: a shared MLP runs per pool

    def _model(self, spec: Spec, precision: Any) -> tuple[Any, dict[str, str]]:
        model = self.kind.build(self.reading, spec)
        names = harness.load_into(self.kind.who, model, self.twin, self.state, self.reading.layers)
        return model.to(precision), names

    def score(self, spec: Spec) -> Candidate:
        model, names = self._model(spec, np.float64)
        low_model = self._model(spec, np.float32)[0] if self.dtype == "float32" else None
        ours_buffers = {names[k]: v for k, v in self.their_buffers.items() if k in names}
        candidate, raised = Candidate(spec.name, []), 0
        for label, x, dy, mode, theirs in self.cases:
            ours, why = self._run(model, x, dy, mode, ours_buffers)
            if theirs is None or ours is None:
                raised += theirs is None
                candidate.rows.append(_raise_row(label, theirs is None, ours is None, spec.may_raise, why))
                continue
            low = None if low_model is None else self._run(
                low_model, x.astype(np.float32), dy.astype(np.float32), mode, ours_buffers)[0]
            rows = harness.compare_runs(label, theirs, ours, self.rtol, self.atol, names, low)
            steps = harness.step_rows(theirs, ours, self.order, self.reading.layers, self.rtol, self.atol)
            candidate.rows += rows
            agreeing = 0
            for _, _, row in steps:
                if not row.passed:
                    break
                agreeing += 1
            candidate.steps_agreeing += agreeing
            if candidate.first_divergence is None and not all(r.passed for r in rows):
                where, detail = self._divergence(steps, rows)
                candidate.first_divergence, candidate.divergence_detail = where, f"{detail}; in {label}"
        if spec.may_raise and not raised:
            candidate.rows.append(compare("no map size raised (a pool fixed at construction would on some)",
                                          np.array(np.nan), np.array(0.0)))
        return candidate

    def _run(self, model: Any, x: np.ndarray, dy: np.ndarray, mode: bool,
             buffers: dict[str, np.ndarray]) -> tuple[harness.Run | None, str]:
        try:
            return harness.run_minibam(model, set(self.reading.layers.values()), x, dy, mode, buffers), ""
        except ValueError as error:  # a structure that cannot run on this map (the H x H window)
            return None, harness.one_line(error)

    def _divergence(self, steps: list[tuple[str, str, Row]], rows: list[Row]) -> tuple[str, str]:
        """Where a failing case first departs (the user's names), and why it is said so."""
        for what, theirs, row in steps:
            if row.passed:
                continue
            if what == "output":
                return theirs, f"its output differs, max rel {row.max_rel:.1e}, while its input agrees"
            culprit = before(self.calls, theirs)
            return culprit, (f"the input of {theirs} differs, max rel {row.max_rel:.1e}, while the "
                             f"layers before agree")
        failed = [r for r in rows if not r.passed]
        if failed and all(" after." in r.name for r in failed):
            key = failed[0].name.split(" after.", 1)[1]
            layer = key.rsplit(".", 1)[0]
            momentum = getattr(dict(self.twin.named_modules()).get(layer), "momentum", None)
            return layer, (f"outputs and gradients agree; its running statistics after the pass differ "
                           f"(the module's momentum is {momentum})")
        if any(r.name.endswith(" y") for r in failed):
            return self.kind.combine_step, "every layer agrees; the output differs where the maps are combined"
        grads = [r.name.split(" grad.", 1)[1] for r in failed if " grad." in r.name]
        for name in reversed(self.order):
            if any(key.startswith(f"{name}.") for key in grads):
                return name, "the forward pass agrees everywhere; this layer's gradient differs (a backward bug)"
        return self.kind.combine_step, "the forward pass agrees; the input gradient differs"


def _raise_row(label: str, theirs_raised: bool, ours_raised: bool, may_raise: bool, why: str) -> Row:
    if theirs_raised and ours_raised:
        return compare(f"{label} forward raised (as this structure does)", np.array(0.0), np.array(0.0))
    if theirs_raised:
        ok = may_raise
        return compare(f"{label} forward raised{' (as a pool fixed at construction does)' if ok else ''}",
                       np.array(0.0 if ok else np.nan), np.array(0.0))
    return compare(f"{label} forward ran where this structure raises ({why})", np.array(np.nan), np.array(0.0))
