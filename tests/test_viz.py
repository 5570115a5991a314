"""minibam.viz: graph drawing (node/edge counts, labels, clusters, collapse) and grad_table.

The DOT text is read back with a small line parser (viz writes one statement per
line), so these tests need neither the graphviz package nor Graphviz's ``dot``; the
tests that do need them skip when they are missing.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pytest

import minibam as mb
from minibam import functional as F
from minibam import nn, viz
from minibam.function import Function, Node

# ----------------------------------------------------------------- helpers
_NODE = re.compile(r'^\s*(?!graph |node |edge )(\w+) \[label="((?:[^"\\]|\\.)*)" (.*)\]$')
_EDGE = re.compile(r"^\s*(\w+) -> (\w+)$")
_CLUSTER = re.compile(r'^\s*subgraph "cluster_(.*)" \{$')
PARAM_FILL = 'fillcolor="#cfe2f3"'


@dataclass
class DotNode:
    label: str
    attrs: str
    clusters: tuple[str, ...]  # enclosing cluster names, outermost first

    @property
    def cluster(self) -> str | None:
        return self.clusters[-1] if self.clusters else None


def parse(dot: str) -> tuple[dict[str, DotNode], list[tuple[str, str]]]:
    assert dot.startswith("digraph minibam {\n") and dot.endswith("}\n")
    nodes: dict[str, DotNode] = {}
    edges: list[tuple[str, str]] = []
    stack: list[str] = []
    for line in dot.splitlines()[1:-1]:
        if m := _CLUSTER.match(line):
            stack.append(m[1])
        elif line.strip() == "}":
            stack.pop()
        elif m := _NODE.match(line):
            label = re.sub(r"\\(.)", lambda c: "\n" if c[1] == "n" else c[1], m[2])
            assert m[1] not in nodes, f"node {m[1]} defined twice"
            nodes[m[1]] = DotNode(label, m[3], tuple(stack))
        elif m := _EDGE.match(line):
            edges.append((m[1], m[2]))
    assert not stack
    for a, b in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} to an undefined node"
    return nodes, edges


def kinds(nodes: dict[str, DotNode], prefix: str) -> dict[str, DotNode]:
    return {k: v for k, v in nodes.items() if k.startswith(prefix)}


def by_label(nodes: dict[str, DotNode], text: str) -> str:
    found = [k for k, v in nodes.items() if v.label == text or v.label.startswith(text + "\n")]
    assert len(found) == 1, (text, found)
    return found[0]


def rand(*shape: int, requires_grad: bool = False, seed: int = 0) -> mb.Tensor:
    data = np.random.default_rng(seed + sum(shape)).normal(size=shape)
    return mb.Tensor(data, requires_grad=requires_grad)


class FakeModule:
    """Only what viz relies on: named_parameters() yielding (dotted name, parameter)."""

    def __init__(self, params: dict[str, mb.Tensor]) -> None:
        self.params = params

    def named_parameters(self):
        yield from self.params.items()


def two_branches(seed: int = 0):
    """out = sum(a.out(relu(a.fc(x))) + sigmoid(b.fc(x))), like BAM's two branches."""
    x = rand(2, 3, seed=seed)
    p = {
        "a.fc.weight": rand(5, 3, requires_grad=True, seed=seed + 1),
        "a.fc.bias": rand(5, requires_grad=True, seed=seed + 2),
        "a.out.weight": rand(3, 5, requires_grad=True, seed=seed + 3),
        "b.fc.weight": rand(3, 3, requires_grad=True, seed=seed + 4),
        "b.fc.bias": rand(3, requires_grad=True, seed=seed + 5),
    }
    h = F.linear(x, p["a.fc.weight"], p["a.fc.bias"]).relu()
    ya = F.linear(h, p["a.out.weight"])
    yb = F.linear(x, p["b.fc.weight"], p["b.fc.bias"]).sigmoid()
    out = (ya + yb).sum()
    return out, FakeModule(p), p


# ------------------------------------------------------- counts and structure
def test_matmul_add_sigmoid_counts_and_edges():
    x, w, b = rand(2, 3), rand(3, 4, requires_grad=True), rand(4, requires_grad=True)
    y = (x @ w + b).sigmoid()
    nodes, edges = parse(viz.to_dot(y))
    ops, tensors = kinds(nodes, "f"), kinds(nodes, "t")
    assert sorted(v.label for v in ops.values()) == ["Add", "MatMul", "Sigmoid"]
    assert len(tensors) == 6  # x, w, b, x@w, x@w+b, y
    assert len(edges) == 8  # 5 op inputs + 3 op outputs
    mm, add, sig = by_label(ops, "MatMul"), by_label(ops, "Add"), by_label(ops, "Sigmoid")
    into = {k: [a for a, b2 in edges if b2 == k] for k in ops}
    out_of = {k: [b2 for a, b2 in edges if a == k] for k in ops}
    assert len(into[mm]) == 2 and len(into[add]) == 2 and len(into[sig]) == 1
    assert all(len(v) == 1 for v in out_of.values())
    assert out_of[mm][0] in into[add] and out_of[add] == into[sig]
    # Exactly the two trainable leaves are highlighted as parameters; y is the output.
    assert sum(PARAM_FILL in v.attrs for v in nodes.values()) == 2
    (output,) = [k for k, v in nodes.items() if "bold" in v.attrs]
    assert out_of[sig] == [output] and nodes[output].label == "(2, 4) float64"


@pytest.mark.parametrize("with_bias", [True, False])
def test_functional_linear(with_bias):
    x, w = rand(4, 3), rand(2, 3, requires_grad=True)
    b = rand(2, requires_grad=True) if with_bias else None
    nodes, edges = parse(viz.to_dot(F.linear(x, w, b)))
    assert [v.label for v in kinds(nodes, "f").values()] == ["Linear"]
    assert len(kinds(nodes, "t")) == 3 + with_bias
    assert len(edges) == 3 + with_bias
    assert {v.label for v in kinds(nodes, "t").values()} >= {"(4, 3) float64", "(4, 2) float64"}


def test_diamond_shares_one_tensor_node():
    x = rand(3, requires_grad=True)
    a = x.exp()
    y = a * a.sigmoid()
    nodes, edges = parse(viz.to_dot(y))
    assert len(kinds(nodes, "f")) == 3 and len(kinds(nodes, "t")) == 4
    assert len(edges) == 7
    exp_out = [b for a2, b in edges if a2 == by_label(nodes, "Exp")]
    assert len(exp_out) == 1
    readers = [nodes[b].label for a2, b in edges if a2 == exp_out[0]]
    assert sorted(readers) == ["Mul", "Sigmoid"]


def test_same_input_twice_draws_two_arrows():
    x = rand(3, requires_grad=True)
    nodes, edges = parse(viz.to_dot(x * x))
    assert len(kinds(nodes, "t")) == 2
    mul = by_label(nodes, "Mul")
    assert [a for a, b in edges if b == mul] == ["t0", "t0"]


def test_leaf_and_no_grad_results_are_single_nodes():
    for t in (mb.Tensor([1.0, 2.0]), _no_grad_result()):
        nodes, edges = parse(viz.to_dot(t))
        assert list(nodes) == ["t0"] and edges == []
        assert "bold" in nodes["t0"].attrs and nodes["t0"].label == "(2,) float64"


def _no_grad_result():
    x = rand(2, requires_grad=True)
    with mb.no_grad():
        return x * 3.0


def test_deep_chain_does_not_recurse():
    x = rand(2, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0  # each step: one Mul and one constant
    nodes, edges = parse(viz.to_dot(y))
    assert len(kinds(nodes, "f")) == 3000
    assert len(edges) == 3 * 3000


# ------------------------------------------------------------------- labels
def test_op_labels_show_hyper_parameters():
    x = rand(2, 3, requires_grad=True)
    y = (x.sum(axis=0) ** 2).sum() + x.sum(axis=1, keepdims=True).sum() \
        + x[:, 1:3].transpose(1, 0).reshape(4).sum()
    labels = {v.label for v in kinds(parse(viz.to_dot(y))[0], "f").values()}
    assert {"Sum axes=(0,)", "Sum axes=(1,) keepdims", "Pow exponent=2",
            "GetItem index=[:, 1:3]", "Transpose axes=(1, 0)", "Reshape shape=(4,)"} <= labels


class _Conv(Function):
    """Identity with conv-like hyper-parameters, to check how they are shown."""

    @staticmethod
    def forward(ctx, x, **params):
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return (grad,)


class _Geometry(NamedTuple):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out: tuple[int, int]


def test_conv_like_hyper_parameters_are_short_and_skip_defaults():
    x = rand(3, requires_grad=True)
    y = _Conv.apply(x, stride=(1, 1), padding=(4, 4), dilation=4,
                    running_mean=np.zeros(3), bias=None, training=True, eps=1e-5)
    z = _Conv.apply(y, stride=2, padding=(1, 2), dilation=(1, 1), training=False,
                    dtype=np.float32)
    # A named tuple of hyper-parameters is shown field by field; the output size is not.
    g = _Geometry(kernel=(3, 3), stride=(1, 1), padding=(4, 4), dilation=(4, 4), out=(6, 6))
    labels = {v.label for v in kinds(parse(viz.to_dot(_Conv.apply(z, g=g)))[0], "f").values()}
    assert labels == {"_Conv d=4 eps=1e-05 p=4 training", "_Conv p=(1, 2) s=2",
                      "_Conv d=4 k=3 p=4"}


def test_gradient_norms_after_backward():
    x, w, b = rand(2, 3), rand(3, 4, requires_grad=True), rand(4, requires_grad=True)
    h = x @ w
    h.retain_grad()
    y = (h + b).sigmoid()
    assert "|grad|" not in viz.to_dot(y)  # nothing has a gradient yet
    dy = np.random.default_rng(1).normal(size=y.shape)
    y.backward(dy)
    nodes, _ = parse(viz.to_dot(y))
    with_grad = {k: v.label for k, v in nodes.items() if "|grad|" in v.label}
    expected = {f"|grad| = {np.linalg.norm(t.grad):.3g}" for t in (w, b, h)}
    assert {label.split("\n")[-1] for label in with_grad.values()} == expected
    assert len(with_grad) == 3  # x and the other intermediates have no .grad
    assert "|grad|" not in viz.to_dot(y, grads=False)


def test_python_constant_shows_its_value():
    x = rand(2, requires_grad=True)
    nodes, _ = parse(viz.to_dot(x * 2.5 + 1))
    assert {"const 2.5", "const 1"} <= {v.label for v in nodes.values()}


def test_float32_dtype_in_labels():
    x = mb.Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    nodes, _ = parse(viz.to_dot(x.relu()))
    assert all(v.label == "(2, 2) float32" for v in kinds(nodes, "t").values())


# ------------------------------------------------------ drawing changes nothing
def test_drawing_records_and_changes_nothing(monkeypatch):
    out, module, params = two_branches()
    out.backward()
    tensors = mb.tensor.topological_order(out)
    before = [(t._node, t.grad, None if t.grad is None else t.grad.copy(), t.data.copy(),
               None if t._node is None else (t._node.inputs, t._node.ctx)) for t in tensors]

    def no_new_nodes(*args, **kwargs):
        raise AssertionError("viz recorded an op")

    monkeypatch.setattr(Node, "__init__", no_new_nodes)
    viz.to_dot(out, modules=module)
    viz.to_dot(out, modules=module, collapse="module")
    viz.graph(out, modules=module, collapse="module", depth=2)
    viz.grad_table(module)
    monkeypatch.undo()

    assert mb.is_grad_enabled()
    assert len(mb.tensor.topological_order(out)) == len(tensors)
    for t, (node, grad, grad_copy, data, links) in zip(tensors, before, strict=True):
        assert t._node is node and t.grad is grad
        np.testing.assert_array_equal(t.data, data)
        if grad is not None:
            np.testing.assert_array_equal(t.grad, grad_copy)
        if node is not None:
            assert (t._node.inputs, t._node.ctx) == links
    # The graph still works: a second backward accumulates the same gradients again.
    first = {k: p.grad.copy() for k, p in params.items()}
    out.backward()
    for k, p in params.items():
        np.testing.assert_allclose(p.grad, 2 * first[k], rtol=1e-12)


# --------------------------------------------------------- modules, clusters
def test_clusters_follow_module_names():
    out, module, _ = two_branches()
    out.backward()
    nodes, edges = parse(viz.to_dot(out, modules=module))
    ops = kinds(nodes, "f")
    linear_clusters = sorted(v.clusters for v in ops.values() if v.label == "Linear")
    assert linear_clusters == [("a", "a.fc"), ("a", "a.out"), ("b", "b.fc")]
    assert nodes[by_label(ops, "ReLU")].clusters == ("a",)  # between a.fc and a.out
    assert nodes[by_label(ops, "Sigmoid")].clusters == ("b",)  # after b.fc, nothing below
    assert nodes[by_label(ops, "Add")].clusters == ()  # joins both branches
    assert nodes[by_label(ops, "Sum axes=(0, 1)")].clusters == ()
    assert nodes["t0"].clusters == () and nodes["t0"].label == "(2, 3) float64"  # x
    params = {k: v for k, v in nodes.items() if PARAM_FILL in v.attrs}
    assert sorted((v.cluster, v.label.split("\n")[0]) for v in params.values()) == [
        ("a.fc", "bias"), ("a.fc", "weight"), ("a.out", "weight"),
        ("b.fc", "bias"), ("b.fc", "weight")]
    # Clusters group nodes only: the same nodes and edges as without modules.
    plain_nodes, plain_edges = parse(viz.to_dot(out))
    assert set(plain_nodes) == set(nodes) and plain_edges == edges


def test_depth_limits_cluster_nesting_and_names_keep_the_rest():
    out, module, _ = two_branches()
    nodes, _ = parse(viz.to_dot(out, modules=module, depth=1))
    assert {v.clusters for v in nodes.values()} == {(), ("a",), ("b",)}
    params = sorted((v.cluster, v.label.split("\n")[0])
                    for v in nodes.values() if PARAM_FILL in v.attrs)
    assert params == [("a", "fc.bias"), ("a", "fc.weight"), ("a", "out.weight"),
                      ("b", "fc.bias"), ("b", "fc.weight")]


def test_op_module_rules_before_first_layer_between_modules_and_mixed_parameters():
    x = rand(2, 3, requires_grad=True)  # so that x.exp() is recorded
    p = {"net.fc.weight": rand(4, 3, requires_grad=True),
         "net.fc.bias": rand(4, requires_grad=True),
         "other.bias": rand(4, requires_grad=True)}
    h = F.linear(x.exp(), p["net.fc.weight"], p["net.fc.bias"])
    y = (h * 3.0 + p["other.bias"]).sum()
    nodes, _ = parse(viz.to_dot(y, modules=FakeModule(p)))
    ops = kinds(nodes, "f")
    assert nodes[by_label(ops, "Linear")].clusters == ("net", "net.fc")
    # Exp runs before the first layer of net.fc (nothing above it): the parent, net.
    assert nodes[by_label(ops, "Exp")].clusters == ("net",)
    # Mul lies between net.fc (above) and "other" (below): their common module, the root.
    assert nodes[by_label(ops, "Mul")].clusters == ()
    assert nodes[by_label(nodes, "const 3")].clusters == ()  # read by Mul only
    assert nodes[by_label(ops, "Add")].clusters == ("other",)
    # Sum: after "other", nothing below: the parent of "other", the root.
    assert nodes[by_label(ops, "Sum axes=(0, 1)")].clusters == ()

    # An op fed by parameters of two modules: the deepest module holding both.
    q = {"net.fc.weight": p["net.fc.weight"], "net.head.bias": p["net.fc.bias"]}
    nodes, _ = parse(viz.to_dot(F.linear(x, *q.values()), modules=FakeModule(q)))
    assert nodes[by_label(nodes, "Linear")].clusters == ("net",)


def test_unnamed_parameters_are_highlighted_without_a_name():
    x = rand(2, 3)
    w, free = rand(3, 3, requires_grad=True), rand(3, requires_grad=True)
    y = F.linear(x, w) + free
    nodes, _ = parse(viz.to_dot(y, modules=FakeModule({"fc.weight": w})))
    labels = sorted(v.label for v in nodes.values() if PARAM_FILL in v.attrs)
    assert labels == ["(3,) float64", "weight\n(3, 3) float64"]


# ------------------------------------------------------------------ collapse
def test_collapse_top_level_modules():
    out, module, params = two_branches()
    out.backward()
    nodes, edges = parse(viz.to_dot(out, modules=module, collapse="module"))
    boxes = kinds(nodes, "m")
    assert len(boxes) == 2 and all(v.clusters == () for v in nodes.values())
    box_a, box_b = by_label(boxes, "a"), by_label(boxes, "b")
    grad_a = np.sqrt(sum(np.sum(p.grad**2) for k, p in params.items() if k.startswith("a.")))
    assert nodes[box_a].label == f"a\n3 ops, 3 params (35 values)\n|grad| = {grad_a:.3g}"
    assert nodes[box_b].label.startswith("b\n2 ops, 2 params (12 values)\n")
    assert sorted(v.label for v in kinds(nodes, "f").values()) == ["Add", "Sum axes=(0, 1)"]
    assert not any(PARAM_FILL in v.attrs for v in nodes.values())
    assert len(kinds(nodes, "t")) == 5  # x, each box's output, Add's and Sum's outputs
    assert len(edges) == 9
    assert ("t0", box_a) in edges and ("t0", box_b) in edges
    add = by_label(nodes, "Add")
    for box in (box_a, box_b):
        (made,) = [b for a, b in edges if a == box]
        assert (made, add) in edges and nodes[made].label == "(2, 3) float64"


def test_collapse_at_depth_two_keeps_outer_clusters():
    out, module, _ = two_branches()
    nodes, edges = parse(viz.to_dot(out, modules=module, collapse="module", depth=2))
    boxes = kinds(nodes, "m")
    assert sorted((v.label.split("\n")[0], v.clusters) for v in boxes.values()) == [
        ("a.fc", ("a",)), ("a.out", ("a",)), ("b.fc", ("b",))]
    assert nodes[by_label(nodes, "ReLU")].clusters == ("a",)
    assert sorted(v.label.split("\n")[1] for v in boxes.values()) == [
        "1 op, 1 param (15 values)", "1 op, 2 params (12 values)", "1 op, 2 params (20 values)"]


def test_collapse_keeps_a_tensor_read_inside_and_outside_without_a_cycle():
    x = rand(2, 3)
    p = {"a.fc.weight": rand(3, 3, requires_grad=True), "a.out.weight": rand(3, 3, requires_grad=True),
         "b.fc.weight": rand(3, 3, requires_grad=True)}
    h = F.linear(x, p["a.fc.weight"])
    y = F.linear(h, p["a.out.weight"]).sum() + F.linear(h, p["b.fc.weight"]).sum()
    nodes, edges = parse(viz.to_dot(y, modules=FakeModule(p), collapse="module"))
    box_a, box_b = by_label(nodes, "a"), by_label(nodes, "b")
    crossing = [b for a, b in edges if a == box_a and (b, box_b) in edges]
    assert len(crossing) == 1  # h: made in a, read by b
    assert (crossing[0], box_a) not in edges


# --------------------------------------------------------------- graphviz
def test_graph_returns_digraph_with_the_same_source():
    graphviz = pytest.importorskip("graphviz")
    out, module, _ = two_branches()
    g = viz.graph(out, modules=module)
    assert isinstance(g, graphviz.Digraph)
    assert g.source == viz.to_dot(out, modules=module)


def test_graph_returns_dot_text_without_graphviz(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` fail
    out, module, _ = two_branches()
    assert viz.graph(out, modules=module, collapse="module") == viz.to_dot(
        out, modules=module, collapse="module")


@pytest.mark.parametrize("collapse", [None, "module"])
def test_dot_program_reads_the_text(collapse):
    graphviz = pytest.importorskip("graphviz")
    out, module, params = two_branches()
    params['a."odd\\name'] = rand(1, requires_grad=True)  # quoting must hold
    out = out + params['a."odd\\name'].sum()
    out.backward()
    dot = viz.to_dot(out, modules=module, collapse=collapse)
    try:
        plain = graphviz.Source(dot).pipe(format="plain", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        pytest.skip("Graphviz's dot program is not installed")
    nodes, edges = parse(dot)
    lines = plain.splitlines()
    assert sum(line.startswith("node ") for line in lines) == len(nodes)
    assert sum(line.startswith("edge ") for line in lines) == len(edges)
    if collapse is None:
        assert nodes[by_label(nodes, '"odd\\name')].cluster == "a"


# -------------------------------------------------------------------- errors
def test_clear_errors():
    out, module, _ = two_branches()
    with pytest.raises(TypeError, match="Tensor"):
        viz.to_dot(np.ones(3))
    with pytest.raises(ValueError, match="collapse"):
        viz.to_dot(out, modules=module, collapse="layers")
    with pytest.raises(ValueError, match="modules="):
        viz.to_dot(out, collapse="module")
    with pytest.raises(ValueError, match="depth"):
        viz.to_dot(out, modules=module, depth=0)
    with pytest.raises(TypeError, match="named_parameters"):
        viz.to_dot(out, modules={"w": 1})
    with pytest.raises(TypeError, match="named_parameters"):
        viz.grad_table(object())


# ---------------------------------------------------------------- grad_table
def _rows(table: str) -> dict[str, list[str]]:
    lines = table.splitlines()
    assert lines[0].split() == ["name", "shape", "|value|", "|grad|", "|grad|/|value|"]
    assert set(lines[1]) == {"-"} and set(lines[-2]) == {"-"}
    rows = {}
    for line in lines[2:-2] + lines[-1:]:
        name, rest = re.split(r"\s{2,}", line, maxsplit=1)
        shape = re.match(r"\(.*?\)|", rest)[0]
        rows[name] = [shape, *rest[len(shape):].split()]
    return rows


def test_grad_table_values():
    out, module, params = two_branches()
    before = _rows(viz.grad_table(module))
    assert before["a.fc.weight"] == ["(5, 3)", f"{np.linalg.norm(params['a.fc.weight'].data):.3e}",
                                     "-", "-"]
    out.backward()
    rows = _rows(viz.grad_table(module))
    assert list(rows)[:-1] == list(params)
    for name, p in params.items():
        v, g = np.linalg.norm(p.data), np.linalg.norm(p.grad)
        assert rows[name] == [str(p.shape), f"{v:.3e}", f"{g:.3e}", f"{g / v:.3e}"]
    total_v = np.sqrt(sum(np.sum(p.data**2) for p in params.values()))
    total_g = np.sqrt(sum(np.sum(p.grad**2) for p in params.values()))
    assert rows["total (47 values)"] == ["", f"{total_v:.3e}", f"{total_g:.3e}",
                                         f"{total_g / total_v:.3e}"]


def test_grad_table_zero_parameter_and_empty_module():
    w = mb.Tensor(np.zeros((2, 2)), requires_grad=True)
    (F.linear(rand(3, 2), w) * rand(3, 2)).sum().backward()
    rows = _rows(viz.grad_table(FakeModule({"fc.weight": w})))
    assert rows["fc.weight"][1] == "0.000e+00" and rows["fc.weight"][3] == "-"
    assert rows["fc.weight"][2] == f"{np.linalg.norm(w.grad):.3e}"
    assert viz.grad_table(FakeModule({})) == "no parameters"


# ------------------------------------------------------------------- BAM graphs
BAM_COUNTS = {  # ops per branch, parameters per branch
    "paper": {"channel_att": (8, 8), "spatial_att": (11, 16)},
    "official": {"channel_att": (7, 6), "spatial_att": (10, 14)},
}


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_bam_graph_has_two_separate_branches(variant):
    bam = nn.BAM(8, 2, variant=variant)
    x = rand(2, 8, 5, 6, requires_grad=True)
    y = bam(x)
    nodes, edges = parse(viz.to_dot(y, modules=bam))
    ops, tensors = kinds(nodes, "f"), kinds(nodes, "t")
    counts = BAM_COUNTS[variant]
    n_ops = sum(o for o, _ in counts.values()) + 1  # + the fused combine
    n_params = sum(p for _, p in counts.values())
    assert len(ops) == n_ops
    assert len(tensors) == n_ops + n_params + 1  # op outputs, parameters, x
    # every op has one output edge, and as many input edges as tensor inputs it drew
    assert len(edges) == sum(1 for a, b in edges if a.startswith("f")) + \
        sum(1 for a, b in edges if b.startswith("f"))
    for branch, (n_branch_ops, n_branch_params) in counts.items():
        inside = [n for n in ops.values() if n.clusters and n.clusters[0] == branch]
        assert len(inside) == n_branch_ops, branch
        params = [n for n in tensors.values()
                  if "cfe2f3" in n.attrs and n.clusters and n.clusters[0] == branch]
        assert len(params) == n_branch_params, branch
        assert all(n.label.split("\n")[0] in ("weight", "bias") for n in params)
    combine = [n for n in ops.values() if n.label.startswith("BamCombine")]
    assert len(combine) == 1 and combine[0].clusters == ()
    assert ("sum" if variant == "paper" else "product") in combine[0].label
    dilated = [n for n in ops.values() if n.label.startswith("Conv2d") and "d=4" in n.label]
    assert len(dilated) == 2 and all("p=4" in n.label for n in dilated)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_bam_graph_collapsed_fits_on_a_screen(variant):
    bam = nn.BAM(8, 2, variant=variant)
    y = bam(rand(2, 8, 5, 6, requires_grad=True))
    nodes, edges = parse(viz.to_dot(y, modules=bam, collapse="module"))
    boxes = kinds(nodes, "m")
    assert sorted(n.label.split("\n")[0] for n in boxes.values()) == ["channel_att", "spatial_att"]
    for box in boxes.values():
        name = box.label.split("\n")[0]
        n_ops, n_params = BAM_COUNTS[variant][name]
        assert f"{n_ops} ops, {n_params} params" in box.label
    assert len(kinds(nodes, "f")) == 1  # only the combine op stays outside the boxes
    # x, the two maps that leave the boxes, and y
    shapes = sorted(n.label.split(" float")[0] for n in kinds(nodes, "t").values())
    assert shapes == ["(2, 1, 5, 6)", "(2, 8, 1, 1)", "(2, 8, 5, 6)", "(2, 8, 5, 6)"]
    assert len(edges) == 8


def test_bamnet_collapsed_draws_one_box_per_stage_and_bam():
    mb.manual_seed(0)
    net = nn.BAMNet(in_channels=1, num_classes=3, widths=(4, 8), reduction_ratio=2, dilation_val=1)
    loss = mb.functional.cross_entropy(net(rand(2, 1, 8, 8)), np.array([0, 2]))
    loss.backward()
    nodes, _ = parse(viz.to_dot(loss, modules=net, collapse="module"))
    names = sorted(n.label.split("\n")[0] for n in kinds(nodes, "m").values())
    assert names == ["bam0", "head", "stage0", "stage1", "stem"]
    assert "|grad|" in " ".join(n.label for n in kinds(nodes, "m").values())
