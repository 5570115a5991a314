"""Why a reference case might fail ``minibam compare``: hints backed by a rerun.

A hint is given only when it could explain the failure, and that is tested rather than
guessed: minibam reruns the case with the one thing changed and says so when every
array then agrees.

- **A non-square map**: the authors' released code pools only the top-left H x H window
  in the channel branch (``avg_pool2d`` with kernel H; it runs for H <= W < 2H). minibam
  reruns with that pooling; when everything agrees the file is named as the released
  code's; otherwise, unless another rerun explains the failure, the pooling is still
  mentioned as a probable cause (with another difference on top it cannot agree alone).
- **An assumed dilation** (no ``meta.dilation_val``, no ``--dilation``): dilations 1 to 8
  are tried; the hint names the one that makes every array agree, if any.
- **An assumed mode** (no ``meta.training``, no ``after.*`` to read it from, no flag):
  the other mode is tried.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from minibam.checks.compare import Row
from minibam.checks.reference import BamConfig, ReferenceFileError, compare_reference

MAX_DILATION = 8


def _agrees(arrays: dict[str, np.ndarray], config: BamConfig, rtol: float | None, atol: float | None,
            pooling: str = "global") -> bool:
    try:
        return all(r.passed for r in compare_reference(arrays, config, rtol, atol, pooling))
    except (ReferenceFileError, ValueError):
        return False


def hints(arrays: dict[str, np.ndarray], config: BamConfig, notes: list[str], rows: list[Row],
          rtol: float | None, atol: float | None, given_dilation: bool, given_mode: bool) -> list[str]:
    """Likely causes of a failed comparison, each tested by a rerun (none when every row passed)."""
    if all(r.passed for r in rows):
        return []
    out = []
    _, _, h, w = arrays["x"].shape
    pooling, possible = "global", None
    y_differs = any(r.name == "y" and not r.passed for r in rows)
    # the pooling changes y; where the released code runs at all (H <= W < 2H)
    if h != w and h <= w < 2 * h and y_differs:
        if _agrees(arrays, config, rtol, atol, "window"):
            pooling = "window"
            out.append(f"x is {h}x{w}: with the authors' released pooling (only the top-left {h}x{h} window, "
                       f"avg_pool2d with kernel H) every array agrees, so the file comes from the released "
                       f"code (verify.bam calls it 'official-released'); minibam pools the whole map")
        else:
            possible = (f"x is {h}x{w}, not square: if the file came from the authors' released code, its "
                        f"channel branch pools only the top-left {h}x{h} window (avg_pool2d with kernel H), "
                        f"a probable cause")
    if not given_dilation and config.dilation_conv_num and any(n.startswith("dilation_val") for n in notes):
        for d in range(1, MAX_DILATION + 1):
            if d != config.dilation_val and _agrees(arrays, replace(config, dilation_val=d), rtol, atol, pooling):
                out.append(f"the dilation was assumed ({config.dilation_val}); with --dilation {d} every array agrees")
                break
    if not given_mode and any(n.startswith("training not stored") for n in notes):
        other = replace(config, training=not config.training)
        if _agrees(arrays, other, rtol, atol, pooling):
            out.append(f"the mode was assumed ({'training' if config.training else 'eval'}); with "
                       f"--{'eval' if config.training else 'train'} every array agrees")
    if possible and not out:  # a rerun that agrees explains the failure better than a guess
        out.append(possible)
    return out
