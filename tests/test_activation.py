"""Sigmoid and ReLU: values, gradients, stability at extreme inputs, dtypes, errors."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, random_upstream, seeds, shapes
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F
from minibam.ops.activation import stable_sigmoid

# name: (functional op, Tensor method name, torch op)
OPS = {
    "sigmoid": (F.sigmoid, "sigmoid", lambda x: x.sigmoid()),
    "relu": (F.relu, "relu", lambda x: x.relu()),
}


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_against_torch_and_finite_differences(name, data):
    mb_fn, method, torch_fn = OPS[name]
    # bound 8: sigmoid's flat tails too, margin 0.1: never on relu's kink
    x = data.draw(arrays(data.draw(shapes(), label="shape"), bound=8.0), label="x")
    seed = data.draw(seeds(), label="seed")
    assert_matches_torch(mb_fn, torch_fn, [x], seed=seed)
    assert mb.gradcheck(mb_fn, [mb.Tensor(x, requires_grad=True)], seed=seed)
    t = mb.Tensor(x)
    np.testing.assert_array_equal(getattr(t, method)().data, mb_fn(t).data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_silent_and_exact_at_extremes(dtype):
    x = mb.Tensor(np.array([-1000.0, -745.0, -50.0, 0.0, 50.0, 1000.0], dtype=dtype),
                  requires_grad=True)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = x.sigmoid()
        y.backward(np.ones(6, dtype=dtype))
    assert y.dtype == dtype and x.grad.dtype == dtype
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(x.grad))
    assert y.data[0] == 0.0 and y.data[-1] == 1.0 and y.data[3] == 0.5
    assert x.grad[0] == 0.0 and x.grad[-1] == 0.0 and x.grad[3] == 0.25
    ref = 1.0 / (1.0 + np.exp(-np.array([-50.0, 50.0])))  # no overflow at +-50
    np.testing.assert_allclose(y.data[[2, 4]], ref.astype(dtype), rtol=1e-6)


@given(x=arrays(shapes(), bound=40.0))
def test_stable_sigmoid_is_symmetric(x):
    # sigma(-x) = 1 - sigma(x): the two branches agree
    np.testing.assert_allclose(stable_sigmoid(-x), 1.0 - stable_sigmoid(x), atol=1e-15)


def test_relu_kink_has_gradient_zero_like_torch():
    x = mb.Tensor([-1.0, 0.0, 2.0], requires_grad=True)
    y = x.relu()
    y.backward(np.array([5.0, 5.0, 5.0]))
    np.testing.assert_array_equal(y.data, [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 5.0])


@pytest.mark.parametrize("name", OPS)
@given(shape=shapes(), seed=seeds())
def test_float32_stays_float32(name, shape, seed):
    mb_fn = OPS[name][0]
    x = mb.Tensor(random_upstream(shape, seed, np.float32) * 3, requires_grad=True)
    y = mb_fn(x)
    assert y.dtype == np.float32
    y.backward(random_upstream(shape, seed + 1, np.float32))
    assert x.grad.dtype == np.float32 and x.grad.shape == shape


@pytest.mark.parametrize("name", OPS)
def test_needs_a_tensor(name):
    with pytest.raises(TypeError, match="Tensor"):
        OPS[name][0](np.ones(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_sends_nothing_through_an_off_unit_even_inf_or_nan(dtype):
    """ReLU's backward multiplies by the mask; an inf or nan upstream gradient at an off
    unit (inf * 0 = nan) must still give 0 there, as PyTorch's threshold_backward does."""
    x = mb.Tensor(np.array([-1.0, 0.0, 0.5, -3.0, 4.0], dtype), requires_grad=True)  # 0.5: on, below 1
    upstream = np.array([np.inf, np.nan, 5.0, -np.inf, np.inf], dtype)
    with np.errstate(all="ignore"):
        F.relu(x).backward(upstream)
    np.testing.assert_array_equal(x.grad, np.array([0.0, 0.0, 5.0, 0.0, np.inf], dtype))
    assert x.grad.dtype == dtype
