"""The switch between the plain path (``minibam/ops/``) and the fast kernels, and the
one dispatch that applies it.

    minibam.backends.fast.enabled                     # True unless MINIBAM_FAST=0 at import
    with minibam.backends.fast.flags(enabled=False):  # the plain path inside the block
        ...

The switch is one process-wide setting, like ``torch.backends.*.flags``. An op's
implementation is chosen when it runs forward; its backward runs the same implementation,
whatever the switch says by then.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import Any

enabled: bool = os.environ.get("MINIBAM_FAST", "1").strip() != "0"

# Plain op -> its fast twin, "module:Class". Imported on first use, so that importing
# minibam loads no kernel; each twin subclasses the plain op it speeds up (so that
# ``isinstance``-style checks and every hyper-parameter stay those of the plain op).
_TWINS = {
    "minibam.ops.attention.BamCombine": "minibam.backends.combine:FastBamCombine",
    "minibam.ops.conv.Conv2d": "minibam.backends.conv:FastConv2d",
    "minibam.ops.activation.ReLU": "minibam.backends.activation:FastReLU",
}
_loaded: dict[str, Any] = {}
_chosen: dict[type, type] = {}


@contextlib.contextmanager
def flags(enabled: bool = True) -> Iterator[None]:  # noqa: A002 - PyTorch's spelling
    """Inside the block, ``fast.enabled`` is ``enabled``; restored on exit."""
    if not isinstance(enabled, bool):
        raise TypeError(f"fast.flags: enabled must be a bool, got {type(enabled).__name__}")
    global_state = globals()
    previous = global_state["enabled"]
    global_state["enabled"] = enabled
    try:
        yield
    finally:
        global_state["enabled"] = previous


def _load(target: str) -> Any:
    if target not in _loaded:
        module, name = target.split(":")
        _loaded[target] = getattr(importlib.import_module(module), name)
    return _loaded[target]


def implementation(function: type) -> type:
    """The class whose ``forward``/``backward`` run for ``function``: its fast twin when
    the fast path is enabled and one exists, else ``function`` itself."""
    if not enabled:
        return function
    chosen = _chosen.get(function)
    if chosen is None:  # once per op class: apply runs this on every op call
        target = _TWINS.get(f"{function.__module__}.{function.__qualname__}")
        chosen = _chosen[function] = function if target is None else _load(target)
    return chosen


def gradient_sums() -> Any:
    """What the backward walk sums each tensor's gradients with: the plain one
    (``minibam.tensor.GradientSums``) or `accumulate.DeferredSums`."""
    if enabled:
        return _load("minibam.backends.accumulate:DeferredSums")()
    from minibam.tensor import GradientSums

    return GradientSums()
