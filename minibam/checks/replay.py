"""Replay a reference case with minibam and compare every array: what ``minibam compare`` does.

    result = compare_file("case.npz")          # a Comparison: rows, notes, hints, passed
    rows = compare_reference(arrays, config)   # the rows alone, for a configuration

The file's format, and how its configuration is read, are `minibam.checks.reference`;
the comparison of one array is `minibam.checks.compare.compare`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from minibam import modules
from minibam.checks.compare import Row, compare, default_tolerance, largest
from minibam.checks.reference import (
    ReferenceFileError,
    infer_config,
    load_arrays,
    meta_value,
    stored_option,
)
from minibam.modules import Config, buffer_arrays
from minibam.nn import StateDictError
from minibam.tensor import Tensor

# Notes worth printing only when a comparison fails (they could explain it); --json keeps all.
QUIET_NOTES = ("not stored in the file, assumed", "mode not stored in the file")


def _run(arrays: Mapping[str, np.ndarray], config: Config, dtype: Any) -> dict[str, np.ndarray]:
    """minibam's y, dx, grad.<name> and after.<buffer> for the file's case, in ``dtype``."""
    module = replace(config, dtype=np.dtype(dtype)).build()
    state = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    try:
        module.load_state_dict(state, strict=True)
    except StateDictError as error:
        raise ReferenceFileError(str(error)) from None
    xt = Tensor(arrays["x"].astype(dtype), requires_grad=True)
    try:
        y = module(xt)
        y.backward(arrays["dy"].astype(dtype))
    except ValueError as error:
        raise ReferenceFileError(f"minibam cannot run this case: {error}") from None
    out = {"y": y.data, "dx": xt.grad}
    out.update({f"grad.{k}": p.grad for k, p in module.named_parameters()})
    out.update({f"after.{k}": v for k, v in buffer_arrays(module).items()})
    return out


def tolerances(config: Config, rtol: float | None, atol: float | None) -> tuple[float, float]:
    """``rtol``/``atol``, or ``torch.testing.assert_close``'s for the case's dtype."""
    default_rtol, default_atol = default_tolerance(config.dtype)
    return (default_rtol if rtol is None else rtol), (default_atol if atol is None else atol)


def compare_reference(arrays: Mapping[str, np.ndarray], config: Config, rtol: float | None = None,
                      atol: float | None = None) -> list[Row]:
    """Rebuild minibam's module from the file, run it on x and dy, compare every array.

    minibam computes in float64 whatever the file's dtype (float32 inputs are exact in
    float64), so it is the reference and a difference is the file's error. The test is
    `minibam.checks.compare.compare`: ``torch.testing.assert_close``'s tolerances for
    the file's dtype unless ``rtol``/``atol`` are given, and a gradient that is zero by
    construction (a bias right before a training-mode BatchNorm) judged on the scale of
    the largest gradient. For a float32 file minibam also runs in float32, and
    ``NOISE_FACTOR`` times its own float32 error is allowed on top.
    """
    rtol, atol = tolerances(config, rtol, atol)
    grads = {k for k in arrays if k.startswith("grad.")}
    ours = _run(arrays, config, np.float64)
    unknown = sorted(k[len("grad."):] for k in grads - set(ours))
    if unknown:
        raise ReferenceFileError(f"gradients for parameters this {config.description.title} does not have: "
                                 f"{', '.join(unknown)}")
    # a float32 file: minibam's own float32 round-off is allowed (``compare``'s ``noise``)
    low = _run(arrays, config, config.dtype) if config.dtype != np.float64 else None
    gradient_names = ["dx"] + [k for k in ours if k in grads]
    scale = largest(ours[k] for k in gradient_names)
    names = ["y"] + gradient_names + [k for k in ours if k.startswith("after.") and k in arrays]
    rows = []
    for k in names:
        if arrays[k].shape != ours[k].shape:
            raise ReferenceFileError(f"{k} has shape {arrays[k].shape} in the file, minibam computes {ours[k].shape}")
        noise = 0.0 if low is None or not ours[k].size else float(
            np.max(np.abs(low[k].astype(np.float64) - ours[k].astype(np.float64))))
        rows.append(compare(k, arrays[k], ours[k], rtol, atol,
                            case_scale=scale if k in gradient_names else None, noise=noise))
    return rows


def overrides(arrays: Mapping[str, np.ndarray], config: Config, given: Mapping[str, Any],
              training: bool | None) -> list[str]:
    """What the caller's flags change against the file's own ``meta.*``."""
    out = []
    own = {o.key for o in config.description.options}
    for option, owners in modules.every_option():
        if given.get(option.key) is not None and option.key not in own:
            out.append(f"{option.flag} is {owners[0].title}'s option; this is a {config.description.title} "
                       f"case, so it was not used")
    for option in config.description.options:
        value, stored = given.get(option.key), stored_option(arrays, option) if option.compare else None
        if value is not None and stored is not None and value != stored:
            out.append(f"{option.flag} {option.text(value)} overrides the file's meta.{option.key} = "
                       f"{option.text(stored)}")
    stored_training = meta_value(arrays, "training", bool)
    if training is not None and stored_training is not None and training != stored_training:
        out.append(f"--{'train' if training else 'eval'} overrides the file's meta.training = {stored_training} "
                   f"(it was made in {'training' if stored_training else 'eval'} mode)")
    return out


@dataclass
class Comparison:
    """Everything ``minibam compare`` reports on one file (`compare_file`)."""

    file: str
    config: Config
    x_shape: tuple[int, ...]
    rows: list[Row]
    rtol: float
    atol: float
    notes: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failed(self) -> list[Row]:
        """The failed rows, worst first."""
        return sorted((r for r in self.rows if not r.passed), key=lambda r: -r.max_rel)

    def shown_notes(self) -> list[str]:
        """The notes worth printing: an assumption only when it could explain a failure."""
        return [n for n in self.notes if not self.passed or not any(q in n for q in QUIET_NOTES)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "file": self.file, "module": self.config.module,
            "config": self.config.describe(), "x_shape": list(self.x_shape), "rtol": self.rtol,
            "atol": self.atol, "notes": self.notes, "overrides": self.overrides, "hints": self.hints,
            "not_compared": self.not_compared, "rows": [r.to_dict() for r in self.rows],
        }


def compare_file(path: str | Path, given: Mapping[str, Any] | None = None, training: bool | None = None,
                 rtol: float | None = None, atol: float | None = None) -> Comparison:
    """Read a reference case, replay it with minibam, compare every array and look for the
    likely cause of any failure. ``ReferenceFileError`` for a file that cannot be replayed."""
    from minibam.checks.hints import hints  # hints rerun compare_reference

    given = given or {}
    arrays = load_arrays(path)
    config, notes = infer_config(arrays, given, training)
    rows = compare_reference(arrays, config, rtol, atol)
    rtol_used, atol_used = tolerances(config, rtol, atol)
    missing = [f"grad.{k}" for k, _ in config.build().named_parameters() if f"grad.{k}" not in arrays]
    return Comparison(str(path), config, tuple(arrays["x"].shape), rows, rtol_used, atol_used, notes,
                      overrides(arrays, config, given, training), hints(arrays, config, notes, rows, rtol, atol),
                      missing)
