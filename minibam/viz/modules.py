"""Which module each node of a drawn graph belongs to.

Clusters (``modules=`` a Module, or anything whose ``named_parameters()`` yields
``(dotted_name, parameter)`` pairs). Every node gets a module path and is drawn inside
nested ``subgraph cluster_<path>`` boxes, so that BAM's ``channel_att`` and
``spatial_att`` branches are visibly apart. Ops do not know their module, so:

1. a parameter belongs to the module in its name (``channel_att.gate_c.gate_c_fc_0``);
2. an op fed directly by parameters belongs to the deepest module that holds all of them;
3. any other op looks along the data flow for the nearest ops of rule 2, upstream on
   every path and downstream on every path. With both sides found it belongs to the
   deepest module holding both (a ReLU between two layers of ``gate_c`` lands in
   ``gate_c``); with one side only, to the *parent* of that side's module, since it runs
   before the first layer or after the last one rather than inside it (a final sigmoid
   after ``fc`` lands beside ``fc``); with neither, to no module;
4. an op's output tensor goes with the op; any other leaf goes to the deepest module
   holding every op that reads it (the input of both BAM branches stays outside both).

``depth`` cuts module paths to that many names (``None``: no cut), so ``depth=1`` draws
just one box per top-level child.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from minibam.tensor import Tensor

if TYPE_CHECKING:
    from minibam.viz.drawing import Walk

Path = tuple[str, ...]


def common(a: Path | None, b: Path | None) -> Path | None:
    """Deepest module holding both (``None`` means "not known", the identity)."""
    if a is None:
        return b
    if b is None:
        return a
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def fold(paths: Iterable[Path | None]) -> Path | None:
    out: Path | None = None
    for p in paths:
        out = common(out, p)
    return out


def module_paths(w: Walk, names: dict[int, str]) -> list[Path]:
    """The module path of every tensor/op index, by rules 1-4 of the module docstring."""
    n = len(w.tensors)
    owner = [
        tuple(names[id(t)].split(".")[:-1]) if id(t) in names else None for t in w.tensors
    ]
    own = [
        fold(owner[j] for j in w.inputs[i] if owner[j] is not None) if w.is_op(i) else None
        for i in range(n)
    ]
    # Nearest parameterised ops on every path: upstream in order, downstream in reverse.
    up: list[Path | None] = [None] * n
    for i in range(n):
        up[i] = fold(own[j] if own[j] is not None else up[j] for j in w.inputs[i])
    down: list[Path | None] = [None] * n
    for i in reversed(range(n)):
        out_readers = w.readers[i]
        down[i] = fold(own[k] if own[k] is not None else down[k] for k in out_readers)
    paths: list[Path] = [()] * n
    for i in range(n):
        if owner[i] is not None:
            paths[i] = owner[i]
        elif w.is_op(i):
            if own[i] is not None:
                paths[i] = own[i]
            elif up[i] is not None and down[i] is not None:
                paths[i] = common(up[i], down[i]) or ()
            elif up[i] is not None or down[i] is not None:
                paths[i] = (up[i] if up[i] is not None else down[i])[:-1]
    for i in range(n):  # leaves that are not named parameters: where they are read
        if owner[i] is None and not w.is_op(i) and w.readers[i]:
            paths[i] = fold(paths[k] for k in w.readers[i]) or ()
    return paths


def named_parameters(module: Any) -> list[tuple[str, Tensor]]:
    method = getattr(module, "named_parameters", None)
    if not callable(method):
        raise TypeError(
            f"viz: modules must have named_parameters() yielding (name, parameter) pairs, "
            f"got {type(module).__name__}"
        )
    return list(method())
