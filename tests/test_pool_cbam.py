"""CBAM's pooling ops: max, L^p and log-sum-exp over the plane; max, mean and both over
the channels. Each against PyTorch float64 and finite differences, with hypothesis-drawn
shapes and a random upstream gradient; ties, extreme values, dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import random_upstream, seeds
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def distinct(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values at least 0.09 apart, in random order: no ties, so that the maximum is unique
    and a finite difference (eps 1e-6) never changes which element wins."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) * 0.1 + rng.uniform(0, 0.01)


def torch_channel_pool(t):
    return torch.cat([t.max(dim=1, keepdim=True)[0], t.mean(dim=1, keepdim=True)], dim=1)


# (minibam op, its PyTorch twin written with PyTorch's own pooling) for every new op
OPS = {
    "global_max_pool2d": (F.global_max_pool2d, lambda t: TF.max_pool2d(t, t.shape[2:]).flatten(1)),
    "global_lp_pool2d": (F.global_lp_pool2d, lambda t: TF.lp_pool2d(t, 2, t.shape[2:]).flatten(1)),
    "global_lse_pool2d": (F.global_lse_pool2d, lambda t: torch.logsumexp(t, dim=(2, 3))),
    "channel_max_pool": (F.channel_max_pool, lambda t: t.max(dim=1, keepdim=True)[0]),
    "channel_avg_pool": (F.channel_avg_pool, lambda t: t.mean(dim=1, keepdim=True)),
    "channel_pool": (F.channel_pool, torch_channel_pool),
}


@st.composite
def maps(draw, max_side: int = 6):
    """(N, C, H, W) shapes, square or not, and a seed for distinct values."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
             draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    return shape, draw(seeds())


@pytest.mark.parametrize("name", OPS)
@given(case=maps())
def test_matches_torch(name, case):
    shape, seed = case
    ours, theirs = OPS[name]
    assert_matches_torch(ours, theirs, [distinct(shape, seed)], seed=seed)


@pytest.mark.parametrize("name", OPS)
@given(case=maps(max_side=4))
def test_gradcheck(name, case):
    shape, seed = case
    x = mb.Tensor(distinct(shape, seed), requires_grad=True)
    assert mb.gradcheck(OPS[name][0], [x], atol=1e-7, rtol=1e-6, seed=seed % 1000)


@given(case=maps(), p=st.sampled_from([1, 1.5, 2, 3, 4]))
def test_lp_norm_types_match_torch(case, p):
    """Any p on positive inputs (a negative power sum is NaN in both libraries)."""
    shape, seed = case
    x = np.abs(distinct(shape, seed)) + 0.1
    assert_matches_torch(lambda t: F.global_lp_pool2d(t, p),
                         lambda t: TF.lp_pool2d(t, p, t.shape[2:]).flatten(1), [x], seed=seed)
    xt = mb.Tensor(x[:, :, :3, :3], requires_grad=True)
    assert mb.gradcheck(lambda t: F.global_lp_pool2d(t, p), [xt], atol=1e-7, rtol=1e-6)


def test_lp_of_an_all_zero_plane_has_zero_gradient_as_torch():
    x = np.zeros((2, 2, 3, 4))
    x[1, 1] = distinct((3, 4), 0)  # one non-zero plane beside the zero ones
    assert_matches_torch(F.global_lp_pool2d, OPS["global_lp_pool2d"][1], [x], seed=1)
    xt = mb.Tensor(x, requires_grad=True)
    F.global_lp_pool2d(xt).backward(random_upstream((2, 2), 2))
    assert np.all(np.isfinite(xt.grad)) and not xt.grad[0].any()


def test_ties_send_the_whole_gradient_to_the_first_maximum():
    """PyTorch's max pooling and torch.max(x, 1) pick the first maximal element in memory
    order; so does minibam. (torch.amax would split it evenly: not what CBAM calls.)"""
    x = np.array([[[[1.0, 3.0, 3.0], [0.0, 3.0, 2.0]]]])
    upstream = np.array([[2.5]])
    xt = mb.Tensor(x, requires_grad=True)
    F.global_max_pool2d(xt).backward(upstream)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = 2.5
    np.testing.assert_array_equal(xt.grad, expected)
    assert_matches_torch(*OPS["global_max_pool2d"], [x], seed=3)

    stacked = np.array([[[[1.0, 5.0]], [[4.0, 5.0]], [[4.0, 0.0]]]])  # (1, 3, 1, 2), ties in channels
    assert_matches_torch(*OPS["channel_max_pool"], [stacked], seed=4)
    assert_matches_torch(*OPS["channel_pool"], [stacked], seed=5)
    ct = mb.Tensor(stacked, requires_grad=True)
    F.channel_max_pool(ct).backward(np.ones((1, 1, 1, 2)))
    np.testing.assert_array_equal(ct.grad[0, :, 0], [[0, 1], [1, 0], [0, 0]])


def test_max_propagates_nan_as_torch():
    x = distinct((1, 2, 2, 3), 6)
    x[0, 1, 1, 0] = np.nan
    with mb.no_grad():
        ours = F.global_max_pool2d(mb.Tensor(x)).data
    theirs = TF.max_pool2d(torch.tensor(x), (2, 3)).flatten(1).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert np.isnan(ours[0, 1]) and not np.isnan(ours[0, 0])


def test_lse_does_not_overflow():
    x = distinct((2, 3, 4, 5), 7) * 100 + 1000.0  # exp(1000) overflows float64
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        assert_matches_torch(*OPS["global_lse_pool2d"], [x], seed=8)
        assert_matches_torch(*OPS["global_lse_pool2d"], [-x], seed=9)


def test_lse_lies_between_max_and_max_plus_log_count():
    x = mb.Tensor(distinct((2, 3, 4, 5), 10))
    lse, mx = F.global_lse_pool2d(x).data, F.global_max_pool2d(x).data
    assert np.all(lse > mx) and np.all(lse <= mx + np.log(20) + 1e-12)


@pytest.mark.parametrize("name", OPS)
def test_float32_stays_float32_and_inputs_are_untouched(name):
    fn, torch_fn = OPS[name]
    x = distinct((2, 3, 5, 4), 11).astype(np.float32)
    before = x.copy()
    xt = mb.Tensor(x, requires_grad=True)
    y = fn(xt)
    assert y.dtype == np.float32
    upstream = random_upstream(y.shape, 12, np.float32)
    y.backward(upstream)
    assert xt.grad.dtype == np.float32 and xt.grad.shape == x.shape
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_fn(tx)
    ty.backward(torch.tensor(upstream))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", OPS)
def test_empty_batch(name):
    fn, torch_fn = OPS[name]
    xt = mb.Tensor(np.zeros((0, 3, 4, 5)), requires_grad=True)
    y = fn(xt)
    assert y.shape == tuple(torch_fn(torch.zeros(0, 3, 4, 5, dtype=torch.float64)).shape)
    y.backward(np.zeros(y.shape))
    assert xt.grad.shape == (0, 3, 4, 5)


PLANE_OPS = ["global_max_pool2d", "global_lp_pool2d", "global_lse_pool2d"]
CHANNEL_OPS = ["channel_max_pool", "channel_avg_pool", "channel_pool"]


@pytest.mark.parametrize("name", OPS)
def test_errors_name_the_op_and_shape(name):
    fn = OPS[name][0]
    with pytest.raises(TypeError, match=f"{name}: x must be a minibam Tensor"):
        fn(np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match=rf"{name}: x must be \(N, C, H, W\).*\(2, 3, 3\)"):
        fn(mb.Tensor(np.zeros((2, 3, 3))))
    empty = (2, 3, 0, 3) if name in PLANE_OPS else (2, 0, 3, 3)
    with pytest.raises(ValueError, match=rf"{name}: cannot pool over .*{empty}".replace("(", r"\(").replace(")", r"\)")):
        fn(mb.Tensor(np.zeros(empty)))


@pytest.mark.parametrize("p", [0, -2, "2", True, None])
def test_lp_norm_type_must_be_a_positive_number(p):
    with pytest.raises(ValueError, match="global_lp_pool2d: norm_type must be a positive number"):
        F.global_lp_pool2d(mb.Tensor(np.ones((1, 1, 2, 2))), p)


# ---------------------------------------------------------------------------- the gate


@st.composite
def gate_cases(draw):
    shape, seed = draw(maps())
    n, c, h, w = shape
    return shape, (n, c, 1, 1) if draw(st.booleans()) else (n, 1, h, w), seed


@given(case=gate_cases())
def test_gate_matches_torch_and_fd(case):
    shape, g_shape, seed = case
    rng = np.random.default_rng(seed)
    x, g = rng.standard_normal(shape), rng.standard_normal(g_shape)
    assert_matches_torch(F.gate, lambda a, b: a * b, [x, g], seed=seed)
    xt, gt = mb.Tensor(x, requires_grad=True), mb.Tensor(g, requires_grad=True)
    assert mb.gradcheck(F.gate, [xt, gt], atol=1e-7, rtol=1e-6, seed=seed % 1000)


@pytest.mark.parametrize("g_shape", [(2, 3, 1, 1), (2, 1, 5, 4)])
def test_gate_float32_and_empty_batch(g_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    g = rng.standard_normal(g_shape).astype(np.float32)
    xt, gt = mb.Tensor(x, requires_grad=True), mb.Tensor(g, requires_grad=True)
    y = F.gate(xt, gt)
    y.backward(np.ones(y.shape, np.float32))
    assert y.dtype == xt.grad.dtype == gt.grad.dtype == np.float32
    np.testing.assert_allclose(gt.grad, (x * np.ones_like(x)).sum(
        axis=(2, 3) if g_shape[1] == 3 else 1, keepdims=True), rtol=1e-5)
    empty = mb.Tensor(np.zeros((0, 3, 5, 4)), requires_grad=True)
    g0 = mb.Tensor(np.zeros((0, *g_shape[1:])), requires_grad=True)
    F.gate(empty, g0).backward(np.zeros((0, 3, 5, 4)))
    assert g0.grad.shape == (0, *g_shape[1:])


def test_gate_errors():
    x = mb.Tensor(np.zeros((2, 3, 5, 4)))
    with pytest.raises(TypeError, match="gate: g must be a minibam Tensor"):
        F.gate(x, np.zeros((2, 3, 1, 1)))
    with pytest.raises(ValueError, match=r"gate: x must be \(N, C, H, W\)"):
        F.gate(mb.Tensor(np.zeros((2, 3, 5))), mb.Tensor(np.zeros((2, 3, 1))))
    with pytest.raises(ValueError, match=r"channel gate \(2, 3, 1, 1\) or a spatial gate \(2, 1, 5, 4\), got \(2, 3, 5, 1\)"):
        F.gate(x, mb.Tensor(np.zeros((2, 3, 5, 1))))
