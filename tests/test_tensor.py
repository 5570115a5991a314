"""Tensor: construction and dtype rules, no aliasing, properties, and the backward walk."""

import sys

import numpy as np
import pytest
from hypothesis import given
from strategies import arrays, random_upstream, seeds, shapes

import minibam as mb
from minibam.function import Function

# ------------------------------------------------------------------ construction


@pytest.mark.parametrize(
    "data, dtype, shape",
    [
        (1.5, np.float64, ()),
        (3, np.float64, ()),
        (True, np.float64, ()),
        ([1, 2, 3], np.float64, (3,)),
        ([[1.0, 2.0]], np.float64, (1, 2)),
        (np.arange(6).reshape(2, 3), np.float64, (2, 3)),
        (np.array([True, False]), np.float64, (2,)),
        (np.ones(2, dtype=np.float32), np.float32, (2,)),
        (np.ones(2, dtype=np.float64), np.float64, (2,)),
        (np.float32(2.5), np.float32, ()),
        (np.ones(2, dtype=np.float16), np.float64, (2,)),
        (np.zeros((0, 3)), np.float64, (0, 3)),
    ],
)
def test_construction_dtype_rules(data, dtype, shape):
    t = mb.Tensor(data)
    assert t.dtype == dtype
    assert t.shape == shape
    assert t.ndim == len(shape)
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=dtype))
    assert t.requires_grad is False and t.grad is None and t.is_leaf


@pytest.mark.parametrize("data", ["abc", np.array([1 + 2j]), None, {"a": 1}])
def test_construction_rejects_non_real(data):
    with pytest.raises(TypeError, match="float32 or float64"):
        mb.Tensor(data)


def test_construction_from_tensor_copies_and_keeps_dtype():
    a = mb.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    b = mb.Tensor(a)
    assert b.dtype == np.float32 and not b.requires_grad
    b.data[0] = 7.0
    assert a.data[0] == 1.0


def test_tensor_never_aliases_caller_array():
    caller = np.arange(4.0)
    t = mb.Tensor(caller, requires_grad=True)
    assert not np.shares_memory(t.data, caller)
    caller[0] = 100.0
    assert t.data[0] == 0.0
    t.data[1] = -5.0  # what an optimizer step would do
    assert caller[1] == 1.0


def test_operand_arrays_are_copied():
    caller = np.ones(3)
    x = mb.Tensor(np.arange(3.0), requires_grad=True)
    y = x * caller
    caller[:] = 5.0  # must not change the recorded graph
    y.backward(np.ones(3))
    np.testing.assert_array_equal(y.data, np.arange(3.0))
    np.testing.assert_array_equal(x.grad, np.ones(3))


def test_backward_does_not_touch_or_alias_the_given_gradient():
    g = np.arange(6.0).reshape(2, 3)
    g_before = g.copy()
    x = mb.Tensor(np.ones(6), requires_grad=True)
    y = x.reshape(2, 3)  # reshape hands views of g back: the leaf must copy
    y.backward(g)
    y.backward(g)  # accumulation is in place on x.grad: must not write into g
    np.testing.assert_array_equal(g, g_before)
    assert not np.shares_memory(x.grad, g)
    np.testing.assert_array_equal(x.grad, 2 * g_before.reshape(-1))

    leaf = mb.Tensor(np.ones((2, 3)), requires_grad=True)
    leaf.backward(g)
    leaf.grad[0, 0] = 99.0
    np.testing.assert_array_equal(g, g_before)


# -------------------------------------------------------------------- properties


def test_properties():
    t = mb.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64
    assert len(t) == 2 and t.numel() == 6 and t.size() == (2, 3) and t.size(1) == 3
    assert t.numpy() is t.data
    assert t.is_leaf and t.grad_fn is None
    y = t * 2
    assert not y.is_leaf and y.grad_fn == "Mul" and y.requires_grad
    assert t.requires_grad_(False) is t and not t.requires_grad


def test_repr():
    t = mb.Tensor([1.0, 2.0], requires_grad=True)
    for text, parts in [
        (repr(t), ("Tensor(", "[1., 2.]", "float64", "requires_grad=True")),
        (repr(t * 2), ("Tensor(", "[2., 4.]", "grad_fn=<Mul>")),
        (repr(mb.Tensor(np.float32(0.5))), ("Tensor(", "0.5", "float32")),
    ]:
        assert all(part in text for part in parts), text
    assert "requires_grad" not in repr(mb.Tensor(1.0))


def test_item():
    assert mb.Tensor([[2.5]]).item() == 2.5
    assert isinstance(mb.Tensor(np.float32(1.5)).item(), float)
    with pytest.raises(RuntimeError, match=r"one element.*\(2,\)"):
        mb.Tensor([1.0, 2.0]).item()


def test_detach_cuts_the_graph():
    x = mb.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.data, x.data)
    y = x * d  # d is a constant: dy/dx = d, not 2x
    y.backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, x.data)
    with pytest.raises(RuntimeError, match="does not require grad"):
        (d * 2).backward(np.ones(3))


# ----------------------------------------------------------------------- no_grad


def test_no_grad_records_nothing_and_restores():
    x = mb.Tensor([1.0, 2.0], requires_grad=True)
    assert mb.is_grad_enabled()
    with mb.no_grad():
        assert not mb.is_grad_enabled()
        y = (x * x).sum()
        with mb.no_grad():
            pass
        assert not mb.is_grad_enabled()  # the inner block restored "off", not "on"
    assert mb.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y.grad_fn is None
    assert y.item() == 5.0
    with pytest.raises(KeyError), mb.no_grad():
        raise KeyError("an error inside the block must still restore grad mode")
    assert mb.is_grad_enabled()
    assert (x * x).requires_grad


# ------------------------------------------------------------------------- backward


def test_backward_errors():
    x = mb.Tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match="does not require grad"):
        mb.Tensor([1.0]).backward()
    assert x.grad is None


def test_backward_without_grad_on_one_element():
    x = mb.Tensor([[3.0]], requires_grad=True)
    (x * x).backward()  # shape (1, 1): implicit gradient 1
    np.testing.assert_array_equal(x.grad, [[6.0]])


def test_grad_accumulates_across_backward_calls():
    x = mb.Tensor([1.0, -2.0], requires_grad=True)
    g = np.array([0.5, 3.0])
    y = x * x
    y.backward(g)
    y.backward(g)  # the same graph a second time
    np.testing.assert_allclose(x.grad, 2 * (2 * x.data * g))
    (x * 3).sum().backward()  # and a new graph
    np.testing.assert_allclose(x.grad, 4 * x.data * g + 3)


def test_constant_inputs_get_no_grad():
    x = mb.Tensor([1.0, 2.0], requires_grad=True)
    c = mb.Tensor([3.0, 4.0])
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_long_chain_has_no_recursion_limit():
    n = 10_000
    assert n > sys.getrecursionlimit()
    x = mb.Tensor([1.0, 2.0], requires_grad=True)
    y = x
    for _ in range(n):
        y = y + 1.0
    y = y * x  # d/dx [(x + n) x] = 2x + n
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, 2 * x.data + n)
    del y  # freeing a 10,000-deep graph must not overflow the C stack either


def test_diamond_graph_sums_both_paths():
    x = mb.Tensor([0.5, -1.5], requires_grad=True)
    a = x * 2.0
    b = a.exp()  # a feeds two consumers ...
    c = a * a  # ... and one consumer twice
    y = b + c
    g = np.array([1.5, -0.25])
    y.backward(g)
    expected = g * (2.0 * np.exp(2.0 * x.data) + 8.0 * x.data)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-14)


def test_same_tensor_as_both_operands():
    x = mb.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x + x).backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])


def test_retain_grad():
    x = mb.Tensor([1.0, 2.0], requires_grad=True)
    h = x * 3.0
    h.retain_grad()
    z = x * 5.0  # a non-leaf without retain_grad
    y = h * h + z
    g = np.array([1.0, -1.0])
    y.backward(g)
    np.testing.assert_allclose(h.grad, 2 * h.data * g)
    np.testing.assert_allclose(x.grad, 3 * 2 * h.data * g + 5 * g)
    assert z.grad is None


@given(shape=shapes(), seed=seeds())
def test_grad_shape_and_dtype_follow_the_leaf(shape, seed):
    for dtype in (np.float32, np.float64):
        x = mb.Tensor(random_upstream(shape, seed, dtype), requires_grad=True)
        y = x * x
        g = random_upstream(shape, seed + 1)
        y.backward(g)  # float64 gradient for a float32 tensor is cast
        assert x.grad.shape == shape and x.grad.dtype == dtype
        np.testing.assert_allclose(x.grad, 2 * x.data * g.astype(dtype), rtol=1e-6)


# ----------------------------------------------------- the engine guards each op


class _WrongShape(Function):
    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return (grad.reshape(-1),)


class _TooFewGrads(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return (grad,)


def test_engine_rejects_bad_backward_results():
    x = mb.Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"_WrongShape.*\(4,\).*\(2, 2\)"):
        _WrongShape.apply(x).backward(np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="_TooFewGrads.*length 1.*2"):
        _TooFewGrads.apply(x, x).backward(np.ones((2, 2)))


@given(x=arrays((3,)))
def test_tensor_ops_leave_tensor_data_alone(x):
    before = x.copy()
    t = mb.Tensor(x, requires_grad=True)
    y = ((t * 2.0).exp().sum() + t.reshape(3, 1).transpose().sum()) / 3.0
    y.backward()
    np.testing.assert_array_equal(t.data, before)
    np.testing.assert_array_equal(x, before)


def test_leaf_gradients_never_share_memory():
    """The engine keeps a fresh backward result as .grad without copying it; arrays
    passed through unchanged (by add, reshape, ...) or handed to two inputs are copied."""
    a = mb.Tensor(np.ones((2, 3)), requires_grad=True)
    b = mb.Tensor(np.ones((2, 3)), requires_grad=True)
    c = mb.Tensor(np.ones((3, 2)), requires_grad=True)
    d = mb.Tensor(np.ones((2, 3)), requires_grad=True)
    g = np.random.default_rng(0).standard_normal((2, 3))
    y = a + b + c.reshape(2, 3) + d * 2.0
    y.backward(g)
    grads = [a.grad, b.grad, c.grad, d.grad]
    for i, gi in enumerate(grads):
        assert not np.shares_memory(gi, g)
        for gj in grads[i + 1:]:
            assert not np.shares_memory(gi, gj)
    y.backward(g)  # accumulating into one leaf must not change another
    np.testing.assert_allclose(a.grad, 2 * g)
    np.testing.assert_allclose(b.grad, 2 * g)
    np.testing.assert_allclose(c.grad, 2 * g.reshape(3, 2))
    np.testing.assert_allclose(d.grad, 4 * g)
