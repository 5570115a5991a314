"""F.cross_entropy: finite differences, PyTorch, dtypes and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds

import minibam as mb
from minibam import functional as F


@st.composite
def logits_and_targets(draw):
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(seeds()))
    scale = draw(st.sampled_from([0.1, 1.0, 30.0]))
    return rng.standard_normal((n, k)) * scale, rng.integers(0, k, size=n)


@given(logits_and_targets(), st.floats(0.1, 3.0))
def test_matches_torch_with_a_random_upstream_scale(case, upstream):
    torch = pytest.importorskip("torch")
    z, t = case
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.as_tensor(t))
    ref.backward(torch.tensor(upstream, dtype=torch.float64))
    x = mb.Tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t)
    loss.backward(np.array(upstream))
    np.testing.assert_allclose(loss.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad, zt.grad.numpy(), rtol=1e-10, atol=1e-12)


@given(logits_and_targets())
def test_finite_differences(case):
    z, t = case
    assert mb.gradcheck(lambda x: F.cross_entropy(x, t), [mb.Tensor(z, requires_grad=True)])


def test_large_logits_do_not_overflow_and_float32_stays_float32():
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 3.0]], dtype=np.float32)
    x = mb.Tensor(z, requires_grad=True)
    with np.errstate(all="raise"):
        loss = F.cross_entropy(x, np.array([0, 2]))
        loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_allclose(loss.item(), (0.0 + 997.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(x.grad, [[0, 0, 0], [0, 0.5, -0.5]], atol=1e-6)


def test_an_empty_batch_gives_nan_quietly_as_pytorch():
    # Fuzz finding (thorough profile, -W error): np.mean warned "Mean of empty slice".
    torch = pytest.importorskip("torch")
    x = mb.Tensor(np.zeros((0, 3)), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.cross_entropy(x, np.zeros(0, dtype=np.int64))
        loss.backward()
    expected = torch.nn.functional.cross_entropy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert np.isnan(loss.item()) and torch.isnan(expected)
    assert x.grad.shape == (0, 3)


def test_errors():
    x = mb.Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        F.cross_entropy(x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="class indices"):
        F.cross_entropy(x, np.array([0, 1, 0.5]))
    # Fuzz finding: the message named neither the logits it was judged against nor the
    # bad target, and np.mod warned on inf and nan before the refusal.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bad, shown in ((np.inf, "inf"), (np.nan, "nan"), (-1, "-1")):
            with pytest.raises(ValueError, match=rf"in \[0, 4\) for logits of shape \(3, 4\), got {shown} at index 1"):
                F.cross_entropy(x, np.array([0, bad, 2]))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        F.cross_entropy(mb.Tensor(np.zeros(3)), np.array([0]))
    with pytest.raises(TypeError):
        F.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]))
