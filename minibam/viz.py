"""Pictures of the autograd graph, and a table of parameter gradients.

    dot = mb.viz.graph(loss, modules=model)        # graphviz.Digraph, or DOT text
    dot.render("bam", format="svg")                 # needs Graphviz's ``dot`` program
    mb.viz.graph(loss, modules=model, collapse="module")   # one box per top-level child
    print(mb.viz.grad_table(model))

What is drawn. Arrows follow the data: input tensor -> op -> output tensor.

- one rounded box per op (one recorded ``Function`` application), labelled with the
  Function's name and the hyper-parameters it was called with (``ctx.params``), e.g.
  ``Sum axes=(2, 3)`` or ``Conv2d d=4 k=3 p=4``: defaults (stride 1, padding 0,
  dilation 1, ``False``, ``None``) and arrays are left out, kernel/stride/padding/dilation
  are shortened (a pair of equal sizes to one number);
- one ellipse per tensor: shape and dtype, and ``|grad|`` (the Frobenius norm of
  ``.grad``) when the tensor has a gradient and ``grads=True``. Trainable leaves are
  blue (with their dotted name when ``modules`` is given), a Python-number constant
  shows its value, the drawn tensor itself is orange.

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

``collapse="module"`` replaces each module at depth ``depth`` (default 1, the top-level
children) by one 3-D box naming it, with its op and parameter counts and the norm of its
parameters' gradients. Tensors that cross the box's border stay visible, so the box's
inputs and outputs keep their shapes; everything inside it disappears.

Drawing only reads tensors: it records no op, changes no ``.grad`` and no ``_node``.
The graph is walked with an explicit stack, so graphs thousands of ops deep are fine.
:func:`to_dot` is the pure text generator; :func:`graph` wraps its result in a
``graphviz.Digraph`` when that package is installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam.tensor import Tensor, topological_order

_Path = tuple[str, ...]

_STYLE = {
    "op": 'shape=box style="rounded,filled" fillcolor="#e8e8e8"',
    "tensor": "shape=ellipse",
    "input": 'shape=ellipse style=filled fillcolor="#ffffff"',
    "param": 'shape=ellipse style=filled fillcolor="#cfe2f3"',
    "output": 'shape=ellipse style="filled,bold" fillcolor="#f9cb9c" penwidth=2',
    "module": 'shape=box3d style=filled fillcolor="#d9ead3"',
}
_CLUSTER_STYLE = 'style="rounded,dashed" color="#808080" fontcolor="#404040"'
_HEADER = (
    "\tgraph [fontname=Helvetica fontsize=10 rankdir=TB]\n",
    "\tnode [fontname=Helvetica fontsize=10]\n",
    "\tedge [arrowsize=0.6]\n",
)
_GRAPH_NAME = "minibam"

# Hyper-parameters shown short, and the values PyTorch uses by default (left out).
_SHORT = {"kernel": "k", "kernel_size": "k", "stride": "s", "padding": "p", "dilation": "d"}
_DEFAULT = {"stride": 1, "padding": 0, "dilation": 1}
_DERIVED = {"out"}  # conv's output size: the output tensor's label shows it


# ---------------------------------------------------------------- public API
def graph(
    t: Tensor,
    grads: bool = True,
    modules: Any = None,
    collapse: str | None = None,
    depth: int | None = None,
) -> Any:
    """The graph that produced ``t``: a ``graphviz.Digraph`` if ``graphviz`` imports,
    else its DOT source (str). Arguments as in :func:`to_dot`; see the module docstring.
    """
    body = _body(t, grads, modules, collapse, depth)
    try:
        import graphviz
    except ImportError:
        return _source(body)
    return graphviz.Digraph(_GRAPH_NAME, body=body)


def to_dot(
    t: Tensor,
    grads: bool = True,
    modules: Any = None,
    collapse: str | None = None,
    depth: int | None = None,
) -> str:
    """DOT source of the graph that produced ``t`` (what :func:`graph` draws).

    ``grads``: show ``|grad|`` on tensors that have ``.grad``. ``modules``: an object
    with ``named_parameters()`` naming the parameters and grouping nodes into clusters.
    ``collapse``: ``None`` or ``"module"`` (needs ``modules``). ``depth``: how many
    levels of module names to show (``None``: all; with ``collapse``, default 1).
    One statement per line; ops are ``f<i>``, tensors ``t<i>``, modules ``m<i>``.
    """
    return _source(_body(t, grads, modules, collapse, depth))


def grad_table(module: Any) -> str:
    """One row per parameter: name, shape, ``|value|``, ``|grad|``, ``|grad|/|value|``.

    Norms are Frobenius norms; ``-`` where there is no gradient yet or the ratio is
    undefined. The last row gives the norms over all parameters together. Use it as
    ``print(grad_table(model))`` after ``loss.backward()``.
    """
    header = ("name", "shape", "|value|", "|grad|", "|grad|/|value|")
    rows: list[tuple[str, ...]] = []
    value_sq, grad_sq, count, any_grad = 0.0, 0.0, 0, False
    for name, p in _named_parameters(module):
        value = float(np.linalg.norm(p.data))
        g = None if p.grad is None else float(np.linalg.norm(p.grad))
        value_sq += value**2
        count += p.data.size
        if g is not None:
            grad_sq += g**2
            any_grad = True
        rows.append((name, str(tuple(p.shape)), f"{value:.3e}", *_grad_columns(g, value)))
    if not rows:
        return "no parameters"
    total_value, total_grad = value_sq**0.5, (grad_sq**0.5 if any_grad else None)
    total = (f"total ({count} values)", "", f"{total_value:.3e}",
             *_grad_columns(total_grad, total_value))
    widths = [max(len(r[i]) for r in (header, *rows, total)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows), rule, line(total)])


def _grad_columns(g: float | None, value: float) -> tuple[str, str]:
    if g is None:
        return "-", "-"
    return f"{g:.3e}", (f"{g / value:.3e}" if value > 0 else "-")


# ------------------------------------------------------------- the graph walk
@dataclass
class _Walk:
    """The graph of ``root``: tensors inputs-first; op ``i`` is the one that made tensor ``i``."""

    tensors: list[Tensor]
    inputs: list[list[int]]  # tensor i's op reads these tensors ([] for a leaf)
    readers: list[list[int]] = field(default_factory=list)  # ops reading tensor i

    def is_op(self, i: int) -> bool:
        return self.tensors[i]._node is not None


def _walk(root: Tensor) -> _Walk:
    """Depth-first with an explicit stack, as ``Tensor.backward`` does, but keeping the
    inputs that need no gradient too (data, constants): they are part of the picture."""
    order = topological_order(root, needing_grad_only=False)
    index = {id(t): i for i, t in enumerate(order)}
    inputs = [
        [] if t._node is None else [index[id(p)] for p in t._node.inputs if p is not None]
        for t in order
    ]
    readers: list[list[int]] = [[] for _ in order]
    for i, ins in enumerate(inputs):
        for j in dict.fromkeys(ins):
            readers[j].append(i)
    return _Walk(order, inputs, readers)


# ------------------------------------------------------- which module is whose
def _common(a: _Path | None, b: _Path | None) -> _Path | None:
    """Deepest module holding both (``None`` means "not known", the identity)."""
    if a is None:
        return b
    if b is None:
        return a
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _fold(paths: Iterable[_Path | None]) -> _Path | None:
    out: _Path | None = None
    for p in paths:
        out = _common(out, p)
    return out


def _module_paths(w: _Walk, names: dict[int, str]) -> list[_Path]:
    """The module path of every tensor/op index, by rules 1-4 of the module docstring."""
    n = len(w.tensors)
    owner = [
        tuple(names[id(t)].split(".")[:-1]) if id(t) in names else None for t in w.tensors
    ]
    own = [
        _fold(owner[j] for j in w.inputs[i] if owner[j] is not None) if w.is_op(i) else None
        for i in range(n)
    ]
    # Nearest parameterised ops on every path: upstream in order, downstream in reverse.
    up: list[_Path | None] = [None] * n
    for i in range(n):
        up[i] = _fold(own[j] if own[j] is not None else up[j] for j in w.inputs[i])
    down: list[_Path | None] = [None] * n
    for i in reversed(range(n)):
        out_readers = w.readers[i]
        down[i] = _fold(own[k] if own[k] is not None else down[k] for k in out_readers)
    paths: list[_Path] = [()] * n
    for i in range(n):
        if owner[i] is not None:
            paths[i] = owner[i]
        elif w.is_op(i):
            if own[i] is not None:
                paths[i] = own[i]
            elif up[i] is not None and down[i] is not None:
                paths[i] = _common(up[i], down[i]) or ()
            elif up[i] is not None or down[i] is not None:
                paths[i] = (up[i] if up[i] is not None else down[i])[:-1]
    for i in range(n):  # leaves that are not named parameters: where they are read
        if owner[i] is None and not w.is_op(i) and w.readers[i]:
            paths[i] = _fold(paths[k] for k in w.readers[i]) or ()
    return paths


# ----------------------------------------------------------- nodes and edges
@dataclass
class _Item:
    key: str
    label: str
    kind: str  # a key of _STYLE
    path: _Path
    tensor: int | None = None  # index into _Walk.tensors for tensor nodes


def _body(t: Any, grads: bool, modules: Any, collapse: str | None,
          depth: int | None) -> list[str]:
    if not isinstance(t, Tensor):
        raise TypeError(f"viz: expected a minibam Tensor, got {type(t).__name__}")
    if collapse not in (None, "module"):
        raise ValueError(f"viz: collapse must be None or 'module', got {collapse!r}")
    if collapse is not None and modules is None:
        raise ValueError("viz: collapse='module' needs modules= (to know the module names)")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or depth < 1):
        raise ValueError(f"viz: depth must be None or an int >= 1, got {depth!r}")
    names: dict[int, str] = {}
    if modules is not None:
        for name, p in _named_parameters(modules):
            names.setdefault(id(p), name)

    w = _walk(t)
    paths = _module_paths(w, names)
    items, edges = _items(w, paths, names, grads)
    if collapse == "module":
        depth = 1 if depth is None else depth
        items, edges = _collapse(items, edges, depth, w, grads)
        depth -= 1  # clusters only for the levels above the collapsed boxes
    return _emit(items, edges, depth)


def _items(w: _Walk, paths: list[_Path], names: dict[int, str],
           grads: bool) -> tuple[list[_Item], list[tuple[str, str]]]:
    items: list[_Item] = []
    edges: list[tuple[str, str]] = []
    last = len(w.tensors) - 1  # the root: the walk appends it last
    for i, tensor in enumerate(w.tensors):
        if tensor._node is not None:
            node = tensor._node
            items.append(_Item(f"f{i}", _op_label(node.name, getattr(node.ctx, "params", {})),
                               "op", paths[i]))
            edges += [(f"t{j}", f"f{i}") for j in w.inputs[i]]
            edges.append((f"f{i}", f"t{i}"))
        if i == last:
            kind = "output"
        elif tensor._node is not None:
            kind = "tensor"
        else:
            kind = "param" if tensor.requires_grad else "input"
        label = _tensor_label(tensor, names.get(id(tensor)), grads)
        items.append(_Item(f"t{i}", label, kind, paths[i], tensor=i))
    return items, edges


def _collapse(items: list[_Item], edges: list[tuple[str, str]], depth: int, w: _Walk,
              grads: bool) -> tuple[list[_Item], list[tuple[str, str]]]:
    """One box per module at ``depth``; tensors crossing its border stay visible."""
    group = {it.key: it.path[:depth] if len(it.path) >= depth else None for it in items}
    neighbours: dict[str, set[str]] = {it.key: set() for it in items}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    boxes: dict[_Path, str] = {}
    rep: dict[str, str] = {}
    out: list[_Item] = []
    members: dict[_Path, list[_Item]] = {}
    for it in items:
        g = group[it.key]
        crossing = it.tensor is not None and (
            it.kind == "output" or any(group[n] != g for n in neighbours[it.key]))
        if g is None or crossing:
            rep[it.key] = it.key
            out.append(it)
            continue
        if g not in boxes:
            boxes[g] = f"m{len(boxes)}"
            out.append(_Item(boxes[g], "", "module", g))
        rep[it.key] = boxes[g]
        members.setdefault(g, []).append(it)
    for it in out:
        if it.kind == "module":
            it.label = _module_label(it.path, members[it.path], w, grads)

    made_inside = {it.key for it in items
                   if it.tensor is not None and w.is_op(it.tensor) and rep[it.key] == it.key
                   and group[it.key] is not None}
    new_edges: dict[tuple[str, str], None] = {}  # ordered set: one arrow per pair
    for a, b in edges:
        ra, rb = rep[a], rep[b]
        if ra == rb or (a in made_inside and rb == boxes.get(group[a])):
            continue  # inside one box, or a box's own output read again inside it
        new_edges[(ra, rb)] = None
    return out, list(new_edges)


def _module_label(path: _Path, members: list[_Item], w: _Walk, grads: bool) -> str:
    ops = sum(1 for m in members if m.kind == "op")
    params = [w.tensors[m.tensor] for m in members if m.kind == "param"]
    values = sum(p.data.size for p in params)
    lines = [".".join(path), f"{_count(ops, 'op')}, {_count(len(params), 'param')} "
                              f"({_count(values, 'value')})"]
    with_grad = [p.grad for p in params if p.grad is not None]
    if grads and with_grad:
        norm = float(np.sqrt(sum(float(np.sum(np.square(g))) for g in with_grad)))
        lines.append(f"|grad| = {norm:.3g}")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# ----------------------------------------------------------------- labels
def _op_label(name: str, params: dict) -> str:
    flat: list[tuple[str, Any]] = []
    for key, value in params.items():
        # A named tuple of hyper-parameters (conv's geometry) is shown field by field.
        flat += value._asdict().items() if hasattr(value, "_asdict") else [(key, value)]
    # An op's working dtype is its output's, already on the output's node; only a cast
    # is about its dtype.
    hidden = _DERIVED if name == "Cast" else {*_DERIVED, "dtype"}
    shown = [_param_text(key, value) for key, value in flat if key not in hidden]
    return " ".join([name, *sorted(text for text in shown if text is not None)])


def _param_text(key: str, value: Any) -> str | None:
    if value is None or value is False or isinstance(value, np.ndarray):
        return None
    if value is True:
        return key
    if key in _SHORT:
        if isinstance(value, (tuple, list)) and len(set(value)) == 1:
            value = value[0]
        if key in _DEFAULT and value == _DEFAULT[key]:
            return None
        key = _SHORT[key]
    if key == "index":
        text = _index_text(value)
    elif isinstance(value, (np.dtype, type)):
        text = np.dtype(value).name
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(tuple(value)) if isinstance(value, list) else str(value)
    if len(text) > 30:
        text = text[:29] + "..."
    return f"{key}={text}"


def _index_text(index: Any) -> str:
    """``x[:, 1:3]``-style text for a basic index."""
    parts = index if isinstance(index, tuple) else (index,)
    shown = []
    for p in parts:
        if isinstance(p, slice):
            text = ":".join("" if v is None else str(v) for v in (p.start, p.stop))
            shown.append(text if p.step is None else f"{text}:{p.step}")
        elif p is Ellipsis:
            shown.append("...")
        elif p is None:
            shown.append("None")
        else:
            shown.append(str(p))
    return "[" + ", ".join(shown) + "]"


def _tensor_label(t: Tensor, name: str | None, grads: bool) -> str:
    lines = [] if name is None else [name]
    if name is None and t._node is None and not t.requires_grad and t.data.size == 1:
        lines.append(f"const {t.data.item():g}")
    else:
        lines.append(f"{tuple(t.shape)} {t.dtype}")
    if grads and t.grad is not None:
        lines.append(f"|grad| = {float(np.linalg.norm(t.grad)):.3g}")
    return "\n".join(lines)


# ------------------------------------------------------------------- DOT text
def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _emit(items: list[_Item], edges: list[tuple[str, str]], depth: int | None) -> list[str]:
    """Body lines (as ``graphviz`` writes them): nodes nested in their clusters, then edges."""
    at: dict[_Path, list[_Item]] = {}
    children: dict[_Path, list[_Path]] = {(): []}
    for it in items:
        path = it.path if depth is None else it.path[:depth]
        at.setdefault(path, []).append(it)
        for n in range(1, len(path) + 1):
            if path[:n] not in children:
                children[path[:n]] = []
                children[path[: n - 1]].append(path[:n])
    lines = list(_HEADER)

    def emit(path: _Path, indent: str) -> None:
        for it in at.get(path, []):
            label = it.label
            if it.kind == "param" and path and label.startswith(".".join(path) + "."):
                label = label[len(".".join(path)) + 1:]  # the cluster already says the rest
            lines.append(f"{indent}{it.key} [label={_quote(label)} {_STYLE[it.kind]}]\n")
        for child in children[path]:
            lines.append(f"{indent}subgraph {_quote('cluster_' + '.'.join(child))} {{\n")
            lines.append(f"{indent}\tgraph [label={_quote(child[-1])} {_CLUSTER_STYLE}]\n")
            emit(child, indent + "\t")
            lines.append(f"{indent}}}\n")

    emit((), "\t")
    lines += [f"\t{a} -> {b}\n" for a, b in edges]
    return lines


def _source(body: list[str]) -> str:
    return f"digraph {_GRAPH_NAME} {{\n" + "".join(body) + "}\n"


def _named_parameters(module: Any) -> list[tuple[str, Tensor]]:
    method = getattr(module, "named_parameters", None)
    if not callable(method):
        raise TypeError(
            f"viz: modules must have named_parameters() yielding (name, parameter) pairs, "
            f"got {type(module).__name__}"
        )
    return list(method())
