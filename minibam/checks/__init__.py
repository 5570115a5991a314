"""What ``minibam check`` and ``minibam reference`` / ``compare`` verify.

- `minibam.checks.runner`: one check = analytic backward vs finite differences
  (and vs PyTorch float64 when it is installed);
- `minibam.checks.catalogue`: every op, with small inputs;
- `minibam.checks.bam`: BAM with random weights, and BAM as a check;
- `minibam.checks.reference`: the ``.npz`` reference case format, written and compared.
"""

from __future__ import annotations

import numpy as np

from minibam.checks.bam import bam_cases, random_bam
from minibam.checks.catalogue import op_cases
from minibam.checks.runner import FD_TOL, TORCH_TOL, Case, Result, relative_error, run_case


def all_cases(seed: int = 0, thorough: bool = False) -> list[Case]:
    """Every op, then BAM in both variants; inputs drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return op_cases(rng, thorough) + bam_cases(rng, thorough)


__all__ = [
    "FD_TOL", "TORCH_TOL", "Case", "Result", "all_cases", "random_bam", "relative_error", "run_case",
]
