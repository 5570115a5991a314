"""Why a reference case might fail ``minibam compare``: hints backed by a rerun.

A hint is given only when it could explain the failure, and that is tested rather than
guessed where it can be: minibam reruns the case with the one thing changed and says so
when every array then agrees.

- **The module's own** (``Description.hints``): for BAM, the released code's pooling on a
  non-square map and an assumed dilation; for CBAM, assumed pools and the released
  code's batch-norm momentum.
- **An assumed mode** (no ``meta.training``, no ``after.*`` to read it from, no flag):
  the other mode is tried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from minibam.checks.compare import Row
from minibam.checks.reference import ReferenceFileError
from minibam.checks.replay import compare_reference
from minibam.modules import Config


def hints(arrays: Mapping[str, np.ndarray], config: Config, notes: list[str], rows: list[Row],
          rtol: float | None, atol: float | None) -> list[str]:
    """Likely causes of a failed comparison (none when every row passed)."""
    failed = [r.name for r in rows if not r.passed]
    if not failed:
        return []

    def agrees(other: Config) -> bool:
        try:
            return all(r.passed for r in compare_reference(arrays, other, rtol, atol))
        except (ReferenceFileError, ValueError):
            return False

    out = config.description.hints(arrays, config, notes, failed, agrees)
    if any(n.startswith("training not stored") for n in notes):
        if agrees(replace(config, training=not config.training)):
            out.append(f"the mode was assumed ({'training' if config.training else 'eval'}); with "
                       f"--{'eval' if config.training else 'train'} every array agrees")
    return out
