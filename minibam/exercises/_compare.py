"""Stand-in for ``minibam.checks.compare`` until it lands on main (same call, same Row fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Row:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mismatched: int
    size: int
    worst_index: tuple[int, ...]
    actual: float
    expected: float
    passed: bool


def compare(name: str, actual: Any, expected: Any, rtol: float | None = None,
            atol: float | None = None, case_scale: float | None = None,
            normwise: bool = False) -> Row:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise ValueError(f"compare: {name} has shape {a.shape}, the reference {e.shape}")
    rtol = 1e-7 if rtol is None else rtol
    atol = 1e-7 if atol is None else atol
    if e.size == 0:
        return Row(name, e.shape, 0.0, 0.0, 0, 0, (), 0.0, 0.0, True)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - e)
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = float(np.max(np.abs(e)))
    zero = case_scale is not None and 0 < case_scale and scale <= 1.5e-8 * case_scale
    reference = case_scale if zero else (scale if normwise else np.abs(e))
    mismatched = int(np.count_nonzero(~(diff <= atol + rtol * reference)))
    flat = int(np.argmax(diff))
    worst = tuple(int(i) for i in np.unravel_index(flat, e.shape))
    max_abs = float(diff.flat[flat])
    return Row(name, e.shape, max_abs, max_abs / max(scale, 1e-300), mismatched, int(e.size),
               worst, float(a.flat[flat]), float(e.flat[flat]), mismatched == 0)


def largest(arrays: Any) -> float:
    return max((float(np.max(np.abs(np.asarray(a, np.float64)))) for a in arrays if np.size(a)),
               default=0.0)
