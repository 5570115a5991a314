"""sum and mean over axes: None / int / tuple, negative axes, keepdims."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, axes, random_upstream, seeds, shapes
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F

# name: (functional op, torch method name)
OPS = {"sum": (F.sum, "sum"), "mean": (F.mean, "mean")}


def _torch_reduce(method, axis, keepdims):
    """The same reduction in torch. An empty tuple means "no axis" in NumPy but "all
    axes" in torch, so it is translated to the identity."""

    def fn(x):
        if axis == ():
            return x * 1.0
        return getattr(x, method)(dim=axis, keepdim=keepdims)

    return fn


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_against_numpy_torch_and_finite_differences(name, data):
    mb_fn, method = OPS[name]
    shape = data.draw(shapes(), label="shape")
    x = data.draw(arrays(shape), label="x")
    axis = data.draw(axes(shape), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    seed = data.draw(seeds(), label="seed")

    def fn(t):
        return mb_fn(t, axis=axis, keepdims=keepdims)

    y = fn(mb.Tensor(x))
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert y.shape == np.shape(expected)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-14)
    assert_matches_torch(fn, _torch_reduce(method, axis, keepdims), [x], seed=seed)
    assert mb.gradcheck(fn, [mb.Tensor(x, requires_grad=True)], seed=seed)
    # the Tensor method is the same op
    np.testing.assert_array_equal(getattr(mb.Tensor(x), name)(axis, keepdims).data, y.data)


@pytest.mark.parametrize("name", OPS)
def test_backward_spreads_the_gradient(name):
    x = mb.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    g = np.array([1.0, 10.0])
    getattr(x, name)(axis=-1).backward(g)
    scale = 1.0 if name == "sum" else 1.0 / 3.0
    np.testing.assert_allclose(x.grad, scale * np.array([[1.0] * 3, [10.0] * 3]))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("axis", [0, -1, None, ()])
def test_zero_dim_tensor(name, axis):
    # as PyTorch: axis 0 or -1 of a 0-D tensor is the tensor itself
    x = mb.Tensor(2.5, requires_grad=True)
    y = getattr(x, name)(axis=axis)
    assert y.shape == () and y.item() == 2.5
    y.backward(np.array(4.0))
    assert x.grad.shape == () and x.grad == 4.0


@pytest.mark.parametrize("name", OPS)
@given(shape=shapes(min_dims=1), seed=seeds(), keepdims=st.booleans())
def test_float32_stays_float32(name, shape, seed, keepdims):
    x = mb.Tensor(random_upstream(shape, seed, np.float32), requires_grad=True)
    y = getattr(x, name)(axis=0, keepdims=keepdims)
    assert y.dtype == np.float32
    y.backward(random_upstream(y.shape, seed + 1))
    assert x.grad.dtype == np.float32 and x.grad.shape == shape


def test_sum_over_an_empty_axis_is_zero_and_mean_refuses():
    x = mb.Tensor(np.zeros((0, 3)), requires_grad=True)
    y = x.sum(axis=0)
    np.testing.assert_array_equal(y.data, np.zeros(3))
    y.backward(np.ones(3))
    assert x.grad.shape == (0, 3)
    with pytest.raises(ValueError, match=r"empty axis.*\(0, 3\)"):
        x.mean(axis=0)


@pytest.mark.parametrize("name", OPS)
def test_bad_axes(name):
    x = mb.Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="axis 2 is out of range for a 2-D"):
        getattr(x, name)(axis=2)
    with pytest.raises(ValueError, match="axis -3"):
        getattr(x, name)(axis=(0, -3))
    with pytest.raises(ValueError, match="repeated axis"):
        getattr(x, name)(axis=(1, -1))
    with pytest.raises(TypeError, match="axis"):
        getattr(x, name)(axis=(0, 1.0))
    with pytest.raises(TypeError, match="Tensor"):
        OPS[name][0](np.ones(3))


@pytest.mark.parametrize("name", OPS)
def test_out_of_range_axis_names_the_shape_of_x(name):
    # Fuzz finding: on a 0-D x the message named the axis only, not which input it missed.
    with pytest.raises(ValueError, match=rf"{name}: axis 1 is out of range .*x has shape \(\)"):
        getattr(F, name)(mb.Tensor(np.array(1.5)), axis=1)
