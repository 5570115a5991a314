"""matmul (1-D operands, batches that broadcast) and linear (PyTorch's weight layout)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, matmul_shapes, random_upstream, seeds, shapes
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F


def _t(a, requires_grad=True):
    return mb.Tensor(a, requires_grad=requires_grad)


def _torch_linear(x, w, b=None):
    torch = pytest.importorskip("torch")
    return torch.nn.functional.linear(x, w, b)


# ------------------------------------------------------------------------- matmul


@given(data=st.data())
def test_matmul_against_torch_and_finite_differences(data):
    shape_a, shape_b = data.draw(matmul_shapes(), label="shapes")
    a = data.draw(arrays(shape_a), label="a")
    b = data.draw(arrays(shape_b), label="b")
    seed = data.draw(seeds(), label="seed")
    assert_matches_torch(F.matmul, lambda a, b: a @ b, [a, b], seed=seed)
    assert mb.gradcheck(F.matmul, [_t(a), _t(b)], seed=seed)
    np.testing.assert_array_equal((_t(a, False) @ _t(b, False)).data, a @ b)


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((3,), (4, 3, 2)), ((4, 2, 3), (3,)),
     ((2, 1, 2, 3), (4, 3, 2)), ((1, 3), (5, 3, 1))],
)
def test_matmul_one_d_and_broadcast_batches(shape_a, shape_b):
    a, b = random_upstream(shape_a, 1), random_upstream(shape_b, 2)
    assert_matches_torch(F.matmul, lambda a, b: a @ b, [a, b], seed=3)
    assert mb.gradcheck(F.matmul, [_t(a), _t(b)], seed=3)


def test_matmul_with_ndarray_operands():
    w = _t(np.array([[1.0, 2.0], [3.0, 4.0]]))
    x = np.array([1.0, -1.0])
    y = x @ w  # ndarray on the left dispatches to Tensor.__rmatmul__
    assert isinstance(y, mb.Tensor)
    np.testing.assert_array_equal(y.data, [-2.0, -2.0])
    (w @ x).backward(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(w.grad, [[1.0, -1.0], [2.0, -2.0]])


def test_matmul_errors():
    a = _t(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(4, 2\)"):
        a @ _t(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(2,\)"):
        a @ _t(np.ones(2))
    with pytest.raises(ValueError, match=r"at least 1-D.*\(\)"):
        F.matmul(a, _t(2.0))
    with pytest.raises(ValueError, match=r"batch.*\(2, 2, 3\) and \(3, 3, 2\)"):
        F.matmul(_t(np.ones((2, 2, 3))), _t(np.ones((3, 3, 2))))
    with pytest.raises(TypeError, match="Tensor"):
        F.matmul(np.ones((2, 3)), _t(np.ones((3, 2))))
    with pytest.raises(TypeError, match="Tensor"):
        F.matmul(a, np.ones((3, 2)))


# ------------------------------------------------------------------------- linear


@given(data=st.data())
def test_linear_against_torch_and_finite_differences(data):
    batch = data.draw(shapes(max_dims=2), label="batch")
    n_in = data.draw(st.integers(1, 4), label="in")
    n_out = data.draw(st.integers(1, 4), label="out")
    x = data.draw(arrays((*batch, n_in)), label="x")
    w = data.draw(arrays((n_out, n_in)), label="w")
    b = data.draw(st.none() | arrays((n_out,)), label="b")
    seed = data.draw(seeds(), label="seed")
    assert_matches_torch(F.linear, _torch_linear, [x, w, b], seed=seed)
    inputs = [_t(x), _t(w)] + ([] if b is None else [_t(b)])
    assert mb.gradcheck(F.linear, inputs, seed=seed)
    expected = x @ w.T + (0.0 if b is None else b)
    np.testing.assert_allclose(F.linear(*[_t(v, False) for v in (x, w)], None if b is None else _t(b)).data,
                               expected, rtol=1e-12, atol=1e-14)


def test_linear_only_some_inputs_need_grad():
    x = _t(random_upstream((2, 3), 0), requires_grad=False)
    w = _t(random_upstream((4, 3), 1))
    b = _t(random_upstream((4,), 2), requires_grad=False)
    g = random_upstream((2, 4), 3)
    F.linear(x, w, b).backward(g)
    assert x.grad is None and b.grad is None
    np.testing.assert_allclose(w.grad, g.T @ x.data, rtol=1e-12)


@pytest.mark.parametrize("dtypes", [(np.float32,) * 3, (np.float32, np.float64, np.float32),
                                    (np.float64, np.float32, np.float32), (np.float64,) * 3])
def test_linear_dtypes(dtypes):
    x, w, b = (_t(random_upstream(s, i, d)) for i, (s, d) in enumerate(zip(((2, 3), (4, 3), (4,)), dtypes, strict=True)))
    y = F.linear(x, w, b)
    assert y.dtype == np.result_type(*dtypes)
    y.backward(random_upstream(y.shape, 5))
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == tuple(map(np.dtype, dtypes))


def test_matmul_dtypes():
    a32 = _t(np.ones((2, 3), dtype=np.float32))
    b32 = _t(np.ones((3, 2), dtype=np.float32))
    b64 = _t(np.ones((3, 2)))
    y = a32 @ b32
    assert y.dtype == np.float32
    y.backward(np.ones((2, 2)))
    assert a32.grad.dtype == np.float32 and b32.grad.dtype == np.float32
    a32.grad = None
    y = a32 @ b64
    assert y.dtype == np.float64
    y.backward(np.ones((2, 2)))
    assert a32.grad.dtype == np.float32 and b64.grad.dtype == np.float64


def test_linear_errors():
    x, w = _t(np.ones((2, 3))), _t(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(4, 3\)"):
        F.linear(_t(np.ones((2, 5))), w)
    with pytest.raises(ValueError, match=r"2-D.*\(3,\)"):
        F.linear(x, _t(np.ones(3)))
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        F.linear(x, w, _t(np.ones(3)))
    # Fuzz finding: when the weight is the wrong one, the bias message must say so too.
    with pytest.raises(ValueError, match=r"bias must have shape \(0,\) to match weight of shape \(0, 3\)"):
        F.linear(x, _t(np.ones((0, 3))), _t(np.ones(1)))
    with pytest.raises(ValueError, match=r"\(\).*\(4, 3\)"):
        F.linear(_t(1.0), w)
    for args in ((np.ones((2, 3)), w), (x, np.ones((4, 3))), (x, w, np.ones(4))):
        with pytest.raises(TypeError, match="Tensor"):
            F.linear(*args)
