"""What ``verify.bam`` and ``verify.cbam`` return: a verdict, then the evidence.

``str(report)`` leads with the verdict and the worst offender, then where the module
first departs, then the table; ``report.to_dict()`` is the same as JSON-ready data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam.checks.compare import Row, compare, worst


@dataclass
class Candidate:
    """How one known variant fared against the module."""

    name: str
    rows: list[Row]
    first_divergence: str | None = None
    divergence_detail: str = ""
    steps_agreeing: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.rows)

    def summary(self) -> dict[str, Any]:
        w = worst(self.rows)
        return {"passed": self.passed, "failed_rows": self.failed, "rows": len(self.rows),
                "worst": None if w is None else w.name, "worst_max_rel": None if w is None else w.to_dict()["max_rel"],
                "first_divergence": self.first_divergence}


@dataclass
class Report:
    """The verdict on a user's module. ``rows`` are those of ``closest`` (every compared
    array of every case, named "<mode> <shape> <array>")."""

    module: str
    passed: bool
    variant: str | None
    closest: str | None
    first_divergence: str | None
    rows: list[Row]
    descriptions: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    divergence_detail: str = ""
    notes: list[str] = field(default_factory=list)
    dtype: str = "float64"
    seconds: float = 0.0
    raised: str = ""  # the first case where the module raised: "train (4,16,8,8): RuntimeError: ..."
    raised_traceback: str = ""
    structure: dict[str, Any] = field(default_factory=dict)  # what the module is, read from its layers
    deviations: list[dict[str, Any]] = field(default_factory=list)  # how it differs from paper / released

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module, "passed": self.passed, "variant": self.variant,
            "closest": self.closest, "first_divergence": self.first_divergence,
            "divergence_detail": self.divergence_detail, "fingerprint": self.fingerprint,
            "dtype": self.dtype, "notes": self.notes,
            "candidates": {c.name: c.summary() for c in self.candidates},
            "rows": [r.to_dict() for r in self.rows], "seconds": round(self.seconds, 3),
            "raised": self.raised or None, "structure": self.structure, "deviations": self.deviations,
        }

    def headline(self) -> str:
        both = sum(d.get("differs_from") == "both" for d in self.deviations)
        deviating = f"; {both} deviation(s) from both the paper and the released code" if both else ""
        if self.passed and self.variant is not None:
            return (f"PASS: the module is {self.module} variant {self.variant!r} "
                    f"({self.descriptions.get(self.variant or '', '')}){deviating}")
        if self.passed:
            return (f"PASS: the module computes what its own structure says (no named variant; "
                    f"closest {self.closest!r}){deviating}")
        if self.variant is not None:  # matched, but a known mistake (verify.cbam's port bugs)
            return (f"FAIL: the module is the known {self.module} port bug {self.variant!r} "
                    f"({self.descriptions.get(self.variant, '')})")
        if self.closest is None and self.raised:
            return f"FAIL: the module raised on a legal input, {self.raised}"
        if self.closest is None:
            return f"FAIL: no known {self.module} variant could be compared"
        return (f"FAIL: the module matches no known {self.module} variant; closest is "
                f"{self.closest!r} ({self.descriptions.get(self.closest, '')})")

    def __str__(self) -> str:
        return self.render()

    def render(self, limit: int | None = None, traceback: bool = False) -> str:
        """The verdict, the worst offender, where it departs, then the table: every row,
        or with ``limit`` the failed rows only, at most ``limit`` of them. ``traceback``:
        also the traceback of the module's first raise, if it raised."""
        lines = [f"verify.{self.module.lower()}: {self.headline()}"]
        if self.raised and not self.passed and self.closest is not None:
            lines.append(f"  the module raised: {self.raised}")
        # a case where a module raised has no numbers to show: "the module raised" says it
        w = worst([r for r in self.rows if " forward r" not in r.name])
        if w is not None:
            what = "worst" if all(r.passed for r in self.rows) else "worst offender"
            lines.append(f"  {what}: {w.name}, max rel {w.max_rel:.1e}, {w.mismatched} of {w.size} "
                         f"elements beyond tolerance (at {list(w.worst_index)}: {w.actual:.6g} vs {w.expected:.6g})")
        if self.first_divergence is not None:
            lines.append(f"  first divergence: {self.first_divergence}"
                         + (f" ({self.divergence_detail})" if self.divergence_detail else ""))
        if self.fingerprint:
            lines.append("  fingerprint: " + ", ".join(f"{k}={v}" for k, v in self.fingerprint.items()))
        lines += [f"  deviation: {d['what']}" for d in self.deviations if d.get("differs_from") == "both"]
        for side, other in (("paper", "released code"), ("released code", "paper")):
            like = [d["what"].split(":", 1)[0] for d in self.deviations
                    if d.get("differs_from") == ("released" if side == "paper" else "paper")]
            if like:
                lines.append(f"  as the {side}, unlike the {other}: " + "; ".join(like))
        if len(self.candidates) > 1:
            tried = []
            for c in self.candidates:
                s = c.summary()
                tried.append(f"{c.name} " + ("pass" if c.passed else f"FAIL ({s['failed_rows']}/{s['rows']} arrays)"))
            lines.append("  variants tried: " + "; ".join(tried))
        lines += [f"  note: {n}" for n in self.notes]
        rtol, atol = (self.rows[0].rtol, self.rows[0].atol) if self.rows else (0.0, 0.0)
        lines.append(f"  {self.dtype}: pass when |theirs - minibam| <= atol + rtol * |minibam| element-wise "
                     f"(rtol={rtol:g}, atol={atol:g}, torch.testing.assert_close's defaults); "
                     f"max rel = max abs / max |minibam|; {self.seconds:.1f} s")
        shown = self.rows if limit is None else [r for r in self.rows if not r.passed][:limit]
        if shown:
            width = max(len(r.name) for r in shown)
            header = f"{'array':<{width}}  {'max abs':>9} {'max rel':>9} {'mismatched':>12}  result"
            lines += ["", header, "-" * len(header)]
            for r in shown:
                mism = f"{r.mismatched}/{r.size}"
                lines.append(f"{r.name:<{width}}  {r.max_abs:>9.1e} {r.max_rel:>9.1e} {mism:>12}  "
                             f"{'pass' if r.passed else 'FAIL'}{' (zero by construction)' if r.on_case_scale else ''}")
        hidden = len(self.rows) - len(shown)
        if hidden:
            failed = sum(not r.passed for r in self.rows) - len(shown)
            lines.append(f"({len(self.rows)} arrays compared; " + (
                f"{hidden} more not shown, {failed} of them failed)" if shown else "all passed)"))
        if traceback and self.raised_traceback:
            lines += ["", "the module's first raise:", self.raised_traceback.rstrip()]
        return "\n".join(lines)


def raised_report(module: str, raised: Any, descriptions: dict[str, str], dtype: str,
                  seconds: float) -> Report:
    """The verdict on a module that raised (``raised``: a `harness.ModuleRaised`) before
    any variant could be compared with it: failed, one row for the case that raised."""
    row = compare(f"{raised.label} forward raised", np.array(np.nan), np.array(0.0))
    return Report(module, False, None, None, None, [row], descriptions, dtype=dtype, seconds=seconds,
                  raised=str(raised), raised_traceback=raised.traceback)
