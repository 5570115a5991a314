"""What ``minibam check`` and ``minibam reference`` / ``compare`` verify.

- `compare`: the one comparison of two arrays (tolerances per dtype,
  the rule for a gradient that is zero by construction), used by all of the below and by
  `minibam.verify`;
- `runner`: one check = analytic backward vs finite differences
  (and vs PyTorch float64 when it is installed), each case seeded by its name;
- `catalogue`: every op, with small inputs;
- `modules`: every attention module of `minibam.modules` (BAM, CBAM, ...) with random
  weights, as a check;
- `reference`: the ``.npz`` reference case format, for any of them: written, read, and
  its configuration inferred;
- `replay`: a case run again by minibam and every array compared (``minibam compare``);
- `hints`: likely causes of a failed comparison, tested by reruns.
"""

from __future__ import annotations

from minibam.checks.catalogue import op_cases
from minibam.checks.compare import TOLERANCES, Row, compare, default_tolerance
from minibam.checks.modules import module_cases
from minibam.checks.runner import (
    FD_TOL,
    TORCH_TOL,
    Case,
    Result,
    case_seed,
    relative_error,
    run_case,
)


def all_cases(thorough: bool = False) -> list[Case]:
    """Every op, then every attention module (BAM in both variants, CBAM, ...). A case's inputs
    come from its own seed (``run_case(case, seed)``), so the list itself holds no random numbers."""
    return op_cases(thorough) + module_cases(thorough)


__all__ = [
    "FD_TOL", "TOLERANCES", "TORCH_TOL", "Case", "Result", "Row", "all_cases", "case_seed", "compare",
    "default_tolerance", "relative_error", "run_case",
]
