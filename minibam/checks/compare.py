r"""One comparison of two arrays, shared by ``minibam check``, ``minibam compare`` and ``minibam.verify``.

    row = compare("grad.w", actual, expected)                 # tolerances from expected's dtype
    row = compare("dx", actual, expected, case_scale=s)       # a gradient of a case whose largest is s
    row.passed, row.max_abs, row.max_rel, row.mismatched, row.worst_index, row.to_dict()

**The test** is ``torch.testing.assert_close``'s, element by element,

$$|a_i - e_i| \le \text{atol} + \text{rtol}\,|e_i|,$$

with its default tolerances per dtype (`TOLERANCES`: float64 rtol = atol = 1e-7,
float32 rtol 1.3e-6, atol 1e-5); NaN or infinity anywhere is a mismatch. ``normwise=True``
measures every element against the array's largest magnitude instead of its own
($|a_i - e_i| \le \text{atol} + \text{rtol} \max_j |e_j|$), so that a near-zero element cannot
fail an array whose other elements agree; minibam's self-check uses it.

**A gradient that is zero by construction** (the bias of a layer right before a
training-mode batch norm: the normalisation removes any constant shift, so its exact
gradient is 0) holds only round-off, and round-off divided by 0 is no measure of
anything. So when the reference array's largest magnitude is at most
`ZERO_FRACTION` (the square root of the dtype's machine epsilon) times
``case_scale`` (the largest gradient of the same case), the array is judged on the
case's scale: $|a_i - e_i| \le \text{atol} + \text{rtol}\cdot\text{case\_scale}$. Round-off
then passes, and a real error still fails unless it is about rtol times smaller than
the case's largest gradient.

**A float32 result** carries its own round-off, which grows with every sum (a weight
gradient adds up N x H x W terms) beyond what assert_close's float32 tolerances allow
against an exact result. When the reference was computed in float64, the caller can
measure that round-off by running the reference again in float32: ``noise`` = max
$|\text{reference in float32} - \text{reference in float64}|$; the allowance is then
widened by `NOISE_FACTOR` times it. A correct float32 implementation is within a
small multiple of minibam's own float32 error; a bug is not.

``max_rel`` is always normwise, $\max_i |a_i - e_i| / S$, with $S = \max_i |e_i|$, or
``case_scale`` for a zero-by-construction array: a single number that a near-zero
element cannot blow up. ``mismatched`` counts the elements outside the tolerance;
``worst_index`` is the element with the largest $|a_i - e_i|$, and ``actual`` /
``expected`` are the two values there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# torch.testing.assert_close's defaults (rtol, atol), by the dtype of the reference.
TOLERANCES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.float64): (1e-7, 1e-7),
    np.dtype(np.float32): (1.3e-6, 1e-5),
    np.dtype(np.float16): (1e-3, 1e-5),
}


def default_tolerance(dtype: Any) -> tuple[float, float]:
    """``(rtol, atol)`` as ``torch.testing.assert_close`` chooses them for ``dtype``
    (integer and boolean arrays: exact, ``(0, 0)``)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return 0.0, 0.0
    return TOLERANCES.get(dtype, TOLERANCES[np.dtype(np.float64)])


def zero_fraction(dtype: Any) -> float:
    """How small, relative to its case, a reference gradient must be to count as zero by
    construction: sqrt(machine epsilon) of ``dtype`` (1.5e-8 in float64, 3.5e-4 in float32)."""
    dtype = np.dtype(dtype)
    return float(np.sqrt(np.finfo(dtype if dtype.kind == "f" else np.float64).eps))


NOISE_FACTOR = 20.0

ZERO_FRACTION = {dtype: zero_fraction(dtype) for dtype in TOLERANCES}


@dataclass(frozen=True)
class Row:
    """One compared array: what ``minibam check``, ``compare`` and ``verify`` print and
    serialise (``to_dict()`` is JSON-ready)."""

    name: str
    shape: tuple[int, ...]
    max_abs: float  # max |actual - expected|
    max_rel: float  # max_abs / scale (normwise; see the module docstring)
    mismatched: int  # elements outside atol + rtol * reference
    size: int
    worst_index: tuple[int, ...]  # where |actual - expected| is largest
    actual: float  # the two values there
    expected: float
    passed: bool
    rtol: float
    atol: float
    scale: float  # what max_rel divides by
    on_case_scale: bool = False  # judged on its case's scale (zero by construction)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"], out["worst_index"] = list(self.shape), list(self.worst_index)
        for key in ("max_abs", "max_rel", "actual", "expected", "scale"):
            out[key] = _json_float(out[key])
        return out


def _json_float(value: float) -> float | str:
    """JSON has no NaN or infinity: those become the strings "nan", "inf", "-inf"."""
    return value if np.isfinite(value) else str(value)


def largest(arrays: Any) -> float:
    """The largest magnitude over several arrays (0 for none): a case's scale."""
    return max((float(np.max(np.abs(np.asarray(a, np.float64)))) for a in arrays if np.size(a)),
               default=0.0)


def compare(name: str, actual: Any, expected: Any, rtol: float | None = None,
            atol: float | None = None, case_scale: float | None = None,
            normwise: bool = False, zero_below: float | None = None, noise: float = 0.0) -> Row:
    """Compare ``actual`` with the reference ``expected`` (see the module docstring).

    ``rtol``/``atol`` default to `default_tolerance` of ``expected``'s dtype.
    ``case_scale``: give it for a gradient (the largest gradient of its case) to apply
    the zero-by-construction rule; leave it out for outputs and buffers. ``zero_below``
    replaces `zero_fraction` when the reference itself is noisier than round-off
    (finite differences resolve only ~1e-3 of a case's largest gradient). ``noise``: the
    reference's own float32 round-off (see the module docstring). Raises
    ``ValueError`` naming the array when the shapes differ.
    """
    actual_arr, expected_arr = np.asarray(actual), np.asarray(expected)
    if actual_arr.shape != expected_arr.shape:
        raise ValueError(f"compare: {name} has shape {actual_arr.shape}, the reference {expected_arr.shape}")
    default_rtol, default_atol = default_tolerance(expected_arr.dtype)
    rtol = default_rtol if rtol is None else float(rtol)
    atol = default_atol if atol is None else float(atol)
    a, e = actual_arr.astype(np.float64), expected_arr.astype(np.float64)
    shape, size = tuple(e.shape), int(e.size)
    if size == 0:
        return Row(name, shape, 0.0, 0.0, 0, 0, (), 0.0, 0.0, True, rtol, atol, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - e)
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN anywhere, or inf - inf, is a mismatch
    magnitude = np.abs(e)
    scale = float(np.max(magnitude))
    zero = (case_scale is not None and np.isfinite(scale) and case_scale > 0
            and scale <= (zero_fraction(expected_arr.dtype) if zero_below is None else zero_below) * case_scale)
    if zero:
        scale, reference = float(case_scale), float(case_scale)
    else:
        reference = scale if normwise else magnitude
    allowed = atol + rtol * reference + NOISE_FACTOR * noise
    mismatched = int(np.count_nonzero(~(diff <= allowed)))
    flat = int(np.argmax(diff))
    worst = tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()
    max_abs = float(diff.flat[flat])
    with np.errstate(over="ignore"):  # a huge difference over a tiny scale is inf, no warning
        max_rel = 0.0 if max_abs == 0.0 else max_abs / max(scale, np.finfo(np.float64).tiny)
    return Row(name, shape, max_abs, max_rel, mismatched, size, worst, float(a.flat[flat]),
               float(e.flat[flat]), mismatched == 0, rtol, atol, scale, bool(zero))


def relative_error(actual: Any, reference: Any) -> float:
    """max |actual - reference| / max |reference|: `compare`'s ``max_rel`` alone
    (inf for different shapes or a non-finite value)."""
    try:
        return compare("array", actual, reference).max_rel
    except ValueError:
        return float("inf")


def worst(rows: list[Row]) -> Row | None:
    """The row to show first: a failed one with the largest ``max_rel``, else the largest overall."""
    if not rows:
        return None
    return max(rows, key=lambda r: (not r.passed, r.max_rel))
