"""The drawing itself: walk the graph, make nodes and edges, collapse modules into
boxes, write DOT text. See the package docstring for what is drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam.tensor import Tensor, topological_order
from minibam.viz.labels import op_label, tensor_label
from minibam.viz.modules import Path, module_paths, named_parameters

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


def graph(
    t: Tensor,
    grads: bool = True,
    modules: Any = None,
    collapse: str | None = None,
    depth: int | None = None,
) -> Any:
    """The graph that produced ``t``: a ``graphviz.Digraph`` if ``graphviz`` imports,
    else its DOT source (str). Arguments as in [`to_dot`][minibam.viz.to_dot]; see the module docstring.
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
    """DOT source of the graph that produced ``t`` (what [`graph`][minibam.viz.graph] draws).

    ``grads``: show ``|grad|`` on tensors that have ``.grad``. ``modules``: an object
    with ``named_parameters()`` naming the parameters and grouping nodes into clusters.
    ``collapse``: ``None`` or ``"module"`` (needs ``modules``). ``depth``: how many
    levels of module names to show (``None``: all; with ``collapse``, default 1).
    One statement per line; ops are ``f<i>``, tensors ``t<i>``, modules ``m<i>``.
    """
    return _source(_body(t, grads, modules, collapse, depth))


@dataclass
class Walk:
    """The graph of ``root``: tensors inputs-first; op ``i`` is the one that made tensor ``i``."""

    tensors: list[Tensor]
    inputs: list[list[int]]  # tensor i's op reads these tensors ([] for a leaf)
    readers: list[list[int]] = field(default_factory=list)  # ops reading tensor i

    def is_op(self, i: int) -> bool:
        return self.tensors[i]._node is not None


def _walk(root: Tensor) -> Walk:
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
    return Walk(order, inputs, readers)


@dataclass
class _Item:
    key: str
    label: str
    kind: str  # a key of _STYLE
    path: Path
    tensor: int | None = None  # index into Walk.tensors for tensor nodes


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
        for name, p in named_parameters(modules):
            names.setdefault(id(p), name)

    w = _walk(t)
    paths = module_paths(w, names)
    items, edges = _items(w, paths, names, grads)
    if collapse == "module":
        depth = 1 if depth is None else depth
        items, edges = _collapse(items, edges, depth, w, grads)
        depth -= 1  # clusters only for the levels above the collapsed boxes
    return _emit(items, edges, depth)


def _items(w: Walk, paths: list[Path], names: dict[int, str],
           grads: bool) -> tuple[list[_Item], list[tuple[str, str]]]:
    items: list[_Item] = []
    edges: list[tuple[str, str]] = []
    last = len(w.tensors) - 1  # the root: the walk appends it last
    for i, tensor in enumerate(w.tensors):
        if tensor._node is not None:
            node = tensor._node
            items.append(_Item(f"f{i}", op_label(node.name, getattr(node.ctx, "params", {})),
                               "op", paths[i]))
            edges += [(f"t{j}", f"f{i}") for j in w.inputs[i]]
            edges.append((f"f{i}", f"t{i}"))
        if i == last:
            kind = "output"
        elif tensor._node is not None:
            kind = "tensor"
        else:
            kind = "param" if tensor.requires_grad else "input"
        label = tensor_label(tensor, names.get(id(tensor)), grads)
        items.append(_Item(f"t{i}", label, kind, paths[i], tensor=i))
    return items, edges


def _collapse(items: list[_Item], edges: list[tuple[str, str]], depth: int, w: Walk,
              grads: bool) -> tuple[list[_Item], list[tuple[str, str]]]:
    """One box per module at ``depth``; tensors crossing its border stay visible."""
    group = {it.key: it.path[:depth] if len(it.path) >= depth else None for it in items}
    neighbours: dict[str, set[str]] = {it.key: set() for it in items}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    boxes: dict[Path, str] = {}
    rep: dict[str, str] = {}
    out: list[_Item] = []
    members: dict[Path, list[_Item]] = {}
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


def _module_label(path: Path, members: list[_Item], w: Walk, grads: bool) -> str:
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


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _emit(items: list[_Item], edges: list[tuple[str, str]], depth: int | None) -> list[str]:
    """Body lines (as ``graphviz`` writes them): nodes nested in their clusters, then edges."""
    at: dict[Path, list[_Item]] = {}
    children: dict[Path, list[Path]] = {(): []}
    for it in items:
        path = it.path if depth is None else it.path[:depth]
        at.setdefault(path, []).append(it)
        for n in range(1, len(path) + 1):
            if path[:n] not in children:
                children[path[:n]] = []
                children[path[: n - 1]].append(path[:n])
    lines = list(_HEADER)

    def emit(path: Path, indent: str) -> None:
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


