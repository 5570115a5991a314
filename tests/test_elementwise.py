"""Elementwise arithmetic: + - * / ** neg exp log, broadcasting, dtypes, errors."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, broadcastable_shapes, random_upstream, seeds, shapes
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F


def _t(a, requires_grad=True):
    return mb.Tensor(a, requires_grad=requires_grad)


# name: (minibam op, the same op in torch)
BINARY = {
    "add": (F.add, lambda a, b: a + b),
    "sub": (F.sub, lambda a, b: a - b),
    "mul": (F.mul, lambda a, b: a * b),
    "div": (F.div, lambda a, b: a / b),
}
OPERATOR = {"add": "__add__", "sub": "__sub__", "mul": "__mul__", "div": "__truediv__"}

# name: (minibam op, torch op, inputs must be positive)
UNARY = {
    "neg": (F.neg, lambda x: -x, False),
    "exp": (F.exp, lambda x: x.exp(), False),
    "log": (F.log, lambda x: x.log(), True),
}
# (exponent, base must be positive)
EXPONENTS = [(2, False), (3, False), (1, False), (0, False), (-1, False), (-2.0, False),
             (0.5, True), (-2.5, True), (1.5, True)]


@pytest.mark.parametrize("name", BINARY)
@given(data=st.data())
def test_binary_ops_broadcast_against_torch_and_finite_differences(name, data):
    mb_fn, torch_fn = BINARY[name]
    shape_a, shape_b = data.draw(broadcastable_shapes(), label="shapes")
    a = data.draw(arrays(shape_a), label="a")
    b = data.draw(arrays(shape_b, margin=0.5), label="b")  # a safe divisor
    seed = data.draw(seeds(), label="seed")
    assert_matches_torch(mb_fn, torch_fn, [a, b], seed=seed)
    assert mb.gradcheck(mb_fn, [_t(a), _t(b)], seed=seed)
    # the operator is the same op
    y = getattr(_t(a, False), OPERATOR[name])(_t(b, False))
    np.testing.assert_array_equal(y.data, mb_fn(_t(a, False), _t(b, False)).data)


@pytest.mark.parametrize("name", UNARY)
@given(data=st.data())
def test_unary_ops_against_torch_and_finite_differences(name, data):
    mb_fn, torch_fn, positive = UNARY[name]
    x = data.draw(arrays(data.draw(shapes(), label="shape"), positive=positive), label="x")
    seed = data.draw(seeds(), label="seed")
    assert_matches_torch(mb_fn, torch_fn, [x], seed=seed)
    assert mb.gradcheck(mb_fn, [_t(x)], seed=seed)


@pytest.mark.parametrize("exponent, positive", EXPONENTS)
@given(data=st.data())
def test_pow_scalar_exponent(exponent, positive, data):
    x = data.draw(arrays(data.draw(shapes(), label="shape"), positive=positive), label="x")
    seed = data.draw(seeds(), label="seed")
    assert_matches_torch(lambda x: x**exponent, lambda x: x**exponent, [x], seed=seed)
    assert mb.gradcheck(lambda x: F.pow(x, exponent), [_t(x)], seed=seed)


def test_pow_zero_exponent_has_zero_gradient_at_zero():
    x = _t([0.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x**0).backward(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


@pytest.mark.parametrize(
    "expression",
    [
        lambda x: x + 2.5, lambda x: 2.5 + x, lambda x: x - 2, lambda x: 2 - x,
        lambda x: x * -1.5, lambda x: 3 * x, lambda x: x / 4, lambda x: 1.5 / x,
        lambda x: -x, lambda x: (x * 2 - 1) / (x + 5) ** 2,
    ],
)
@given(x=arrays((2, 3), margin=0.5), seed=seeds())
def test_python_scalars_on_either_side(expression, x, seed):
    assert_matches_torch(expression, expression, [x], seed=seed)
    assert mb.gradcheck(expression, [_t(x)], seed=seed)


def test_ndarray_operands_on_either_side():
    x = _t(np.array([1.0, 2.0, 4.0]))
    c = np.array([2.0, 3.0, 5.0])
    c_before = c.copy()
    for y, expected_grad in [
        (c + x, 1.0), (x + c, 1.0), (c - x, -1.0), (c * x, c), (c / x, -c / x.data**2),
    ]:
        assert isinstance(y, mb.Tensor)
        x.grad = None
        y.backward(np.ones(3))
        np.testing.assert_allclose(x.grad, np.broadcast_to(expected_grad, (3,)))
    np.testing.assert_array_equal(c, c_before)


# ------------------------------------------------------------------------- dtypes


ALL_OPS = [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
    lambda a, b: F.neg(a) + b.exp(), lambda a, b: F.log(a * a) * b, lambda a, b: a**2 * b**-1,
]


@pytest.mark.parametrize("op", ALL_OPS)
@given(shapes_ab=broadcastable_shapes(max_dims=3), seed=seeds())
def test_float32_stays_float32(op, shapes_ab, seed):
    # values in [1, 5) or so: well away from 0 for / and log
    a = _t(np.abs(random_upstream(shapes_ab[0], seed, np.float32)) + 1)
    b = _t(np.abs(random_upstream(shapes_ab[1], seed + 1, np.float32)) + 1)
    y = op(a, b)
    assert y.dtype == np.float32
    y.backward(random_upstream(y.shape, seed + 2, np.float32))
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float32
    # and the values are those of the float64 computation, to float32 precision
    a64, b64 = _t(a.data.astype(np.float64)), _t(b.data.astype(np.float64))
    y64 = op(a64, b64)
    y64.backward(random_upstream(y.shape, seed + 2, np.float32).astype(np.float64))
    np.testing.assert_allclose(y.data, y64.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.grad, a64.grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.grad, b64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "expression",
    [
        lambda x: x + 2.5, lambda x: 2.5 - x, lambda x: x * 3, lambda x: 1e10 / x,
        lambda x: x**2.5, lambda x: x**-1, lambda x: -x, lambda x: x * True,
    ],
)
def test_python_scalar_never_promotes(expression):
    x = _t(np.array([1.0, 2.0], dtype=np.float32))
    y = expression(x)
    assert y.dtype == np.float32
    y.backward(np.ones(2))
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("name", BINARY)
def test_float32_with_float64_promotes_and_casts_grads_back(name):
    mb_fn, _ = BINARY[name]
    a = _t(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    b = _t(np.array([[0.5], [1.0 / 3.0]], dtype=np.float64))
    for y, order in ((mb_fn(a, b), (a, b)), (mb_fn(b, a), (b, a))):
        a.grad = b.grad = None
        assert y.dtype == np.float64
        g = random_upstream(y.shape, 0)
        y.backward(g)
        assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
        # the same computation with a upcast: the float32 grad is that, rounded
        a64 = _t(a.data.astype(np.float64))
        b64 = _t(b.data)
        ref = mb_fn(*(a64 if t is a else b64 for t in order))
        ref.backward(g)
        np.testing.assert_array_equal(a.grad, a64.grad.astype(np.float32))
        np.testing.assert_array_equal(b.grad, b64.grad)


def test_cast_methods():
    x = _t(np.array([1.0, 2.0]))
    y = x.float()
    assert y.dtype == np.float32 and x.to(np.float64) is x and y.double().dtype == np.float64
    (y * 3).backward(np.ones(2, dtype=np.float32))
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    with pytest.raises(TypeError, match="int64"):
        x.to(np.int64)


# ------------------------------------------------------------------------- errors


def test_shapes_that_do_not_broadcast():
    a, b = _t(np.ones((2, 3))), _t(np.ones((4,)))
    for fn in (*(op for op, _ in BINARY.values()), lambda a, b: a + b, lambda a, b: a / b):
        with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
            fn(a, b)


@pytest.mark.parametrize("op", [F.add, F.sub, F.mul, F.div])
def test_functional_binary_ops_need_tensors(op):
    t = _t([1.0])
    for a, b in ((np.ones(1), t), (t, 2.0), ([1.0], t)):
        with pytest.raises(TypeError, match="Tensor"):
            op(a, b)


@pytest.mark.parametrize("op", [F.neg, F.exp, F.log, lambda x: F.pow(x, 2)])
def test_functional_unary_ops_need_tensors(op):
    with pytest.raises(TypeError, match="Tensor"):
        op(np.ones(2))


def test_pow_needs_a_constant_scalar_exponent():
    x = _t([1.0, 2.0])
    for exponent in (x, mb.Tensor(2.0), np.ones(2), "2", None):
        with pytest.raises(TypeError, match="exponent"):
            x**exponent
    with pytest.raises(TypeError):
        2**x


def test_log_outside_its_domain_is_like_torch_and_silent():
    x = _t([0.0, -1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = x.log()
        y.backward(np.ones(3))
    np.testing.assert_array_equal(y.data, [-np.inf, np.nan, 0.0])
    np.testing.assert_array_equal(x.grad, [np.inf, -1.0, 1.0])
