"""global_avg_pool2d: a true mean over H and W (also when H != W), its gradient, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import random_upstream, seeds
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F


@given(
    n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7), seed=seeds()
)
def test_matches_torch(n, c, h, w, seed):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    assert_matches_torch(
        F.global_avg_pool2d,
        lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1),
        [x],
        seed=seed,
    )


def test_non_square_is_a_true_mean():
    """BAM's reference pools an H x H window; here every one of the H*W pixels counts."""
    x = np.arange(2 * 3 * 2 * 5, dtype=np.float64).reshape(2, 3, 2, 5)
    y = F.global_avg_pool2d(mb.Tensor(x))
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y.data, x.reshape(2, 3, 10).sum(axis=2) / 10, rtol=1e-15)
    assert not np.allclose(y.data, x[:, :, :, :2].mean(axis=(2, 3)))


def test_backward_spreads_grad_over_the_plane():
    xt = mb.Tensor(np.zeros((2, 3, 4, 5)), requires_grad=True)
    upstream = random_upstream((2, 3), 4)
    F.global_avg_pool2d(xt).backward(upstream)
    np.testing.assert_allclose(xt.grad, np.broadcast_to(upstream[:, :, None, None] / 20, (2, 3, 4, 5)))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 3), (3, 1, 2, 2)])
def test_gradcheck(shape):
    x = mb.Tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    assert mb.gradcheck(F.global_avg_pool2d, [x], atol=1e-7, rtol=1e-6)


def test_float32_stays_float32():
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 4)).astype(np.float32)
    before = x.copy()
    xt = mb.Tensor(x, requires_grad=True)
    y = F.global_avg_pool2d(xt)
    assert y.dtype == np.float32
    y.backward(random_upstream(y.shape, 3, np.float32))
    assert xt.grad.dtype == np.float32
    np.testing.assert_allclose(y.data, x.mean(axis=(2, 3), dtype=np.float64), rtol=1e-6)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: F.global_avg_pool2d(np.zeros((1, 2, 3, 3))), TypeError, "x must be a minibam Tensor"),
        (lambda: F.global_avg_pool2d(mb.Tensor(np.zeros((2, 3, 3)))), ValueError, r"\(N, C, H, W\).*\(2, 3, 3\)"),
        (lambda: F.global_avg_pool2d(mb.Tensor(np.zeros((2, 3, 0, 3)))), ValueError, r"empty H x W.*\(2, 3, 0, 3\)"),
    ],
)
def test_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
