"""conv2d, im2col and col2im: PyTorch's semantics, exact adjointness, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import random_upstream, seeds
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F
from minibam.backends import conv as fast_conv
from minibam.backends import conv_flat
from minibam.ops import conv
from minibam.ops.conv import col2im, im2col


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def hyper(lo: int, hi: int) -> st.SearchStrategy:
    """An int or an (H, W) pair of ints, as every conv hyper-parameter accepts."""
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


@st.composite
def conv_cases(draw, pointwise: bool = False, stride_one: bool = False):
    """(N, C, O, H, W, kernel, params, seed), H != W allowed, with a non-empty output.

    ``pointwise`` fixes kernel 1, stride 1 and padding 0 (conv2d's path without im2col);
    ``stride_one`` fixes stride 1 (the flat-layout path for every other kernel).
    """
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    k = 1 if pointwise else draw(hyper(1, 3))
    params = {
        "stride": 1 if pointwise or stride_one else draw(hyper(1, 3)),
        "padding": 0 if pointwise else draw(hyper(0, 2)),
        "dilation": draw(hyper(1, 3)),
    }
    for size, kk, s, p, d in zip(
        (h, w), _pair(k), *(_pair(params[name]) for name in ("stride", "padding", "dilation")),
        strict=True,
    ):
        assume((size + 2 * p - d * (kk - 1) - 1) // s + 1 >= 1)
    return n, c, o, h, w, k, params, draw(seeds())


def _normal(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def _torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------ conv2d vs torch


@given(case=conv_cases(), with_bias=st.booleans())
def test_conv2d_matches_torch(case, with_bias):
    _assert_conv2d_matches_torch(case, with_bias)


@given(case=conv_cases(stride_one=True), with_bias=st.booleans())
def test_stride_one_conv2d_matches_torch(case, with_bias):
    """Stride 1 with any kernel, padding and dilation, forced onto the flat padded layout
    (which by default only large maps with few channels take)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_flat, "FLAT_MAX_WASTE", float("inf"))
        patch.setattr(conv_flat, "FLAT_MIN_CHANNELS", 1)
        _assert_conv2d_matches_torch(case, with_bias)


def test_which_convolutions_take_the_flat_path():
    """The rule docs/performance.md states: stride 1, 4 to 16 input channels, at most
    20 % of each flat row thrown away (BAM's dilated convs at 56 x 56 take it)."""
    def flat(channels, size, **params):
        g = conv.geometry("conv2d", size, size, 3, params.get("stride", 1), params.get("padding", 0),
                          params.get("dilation", 1))
        return conv_flat.flat_pays(channels, size, g)

    assert flat(16, 56, padding=4, dilation=4) and flat(4, 32, padding=1)
    assert not flat(16, 14, padding=4, dilation=4)  # 8 of every 22 values wasted
    assert not flat(32, 56, padding=4, dilation=4) and not flat(1, 56, padding=1)
    assert not flat(16, 56, padding=1, stride=2)


def _assert_conv2d_matches_torch(case, with_bias):
    torch = _torch()
    n, c, o, h, w, k, params, seed = case
    rng = np.random.default_rng(seed)
    kh, kw = _pair(k)
    x, weight = _normal(rng, (n, c, h, w)), _normal(rng, (o, c, kh, kw))
    bias = _normal(rng, (o,)) if with_bias else None
    assert_matches_torch(
        lambda x, wt, b: F.conv2d(x, wt, b, **params),
        lambda x, wt, b: torch.nn.functional.conv2d(x, wt, b, **params),
        [x, weight, bias],
        seed=seed,
    )


@given(
    case=conv_cases(pointwise=True),
    with_bias=st.booleans(),
)
def test_pointwise_conv2d_matches_torch(case, with_bias):
    """1x1, stride 1, no padding: the path without im2col (any dilation is a no-op)."""
    _assert_conv2d_matches_torch(case, with_bias)


@pytest.mark.parametrize(
    "kernel, params",
    [
        ((3, 3), {"stride": 2, "padding": 2, "dilation": 2}),  # stride > 1 with dilation > 1
        ((3, 2), {"stride": (1, 3), "padding": (4, 0), "dilation": (4, 1)}),  # BAM's d=4, pairs
        ((1, 1), {}),  # pointwise path
        ((1, 1), {"stride": 2, "padding": 1}),  # 1x1 through im2col
    ],
)
@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_skipped_input_grads(kernel, params, needs):
    """With only x or only weight requiring grad, the other gets none, the one right."""
    torch = _torch()
    rng = np.random.default_rng(7)
    x, weight, bias = _normal(rng, (2, 3, 9, 7)), _normal(rng, (4, 3, *kernel)), _normal(rng, (4,))
    xt = mb.Tensor(x, requires_grad=needs[0])
    wt = mb.Tensor(weight, requires_grad=needs[1])
    y = F.conv2d(xt, wt, mb.Tensor(bias), **params)
    upstream = random_upstream(y.shape, 1)
    y.backward(upstream)

    tx = torch.tensor(x, requires_grad=needs[0])
    tw = torch.tensor(weight, requires_grad=needs[1])
    ty = torch.nn.functional.conv2d(tx, tw, torch.tensor(bias), **params)
    ty.backward(torch.tensor(upstream))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in ((xt, tx), (wt, tw)):
        if ours.requires_grad:
            np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
        else:
            assert ours.grad is None


def test_which_input_gradients_are_a_correlation():
    """Stride 1 with padding at most d (k - 1) on each axis (docs/derivations/conv.md)."""
    def corr(k, **params):
        return fast_conv._correlation_pays(conv.geometry("t", 20, 20, k, params.get("stride", 1),
                                                    params.get("padding", 0), params.get("dilation", 1)))

    assert corr(3, padding=4, dilation=4) and corr(3, padding=1) and corr(3) and corr(1)
    assert corr((3, 1), padding=(2, 0)) and corr(3, padding=(8, 2), dilation=(4, 1))
    assert corr(3, padding=2) and not corr(3, padding=3) and not corr(1, padding=1) and not corr(3, padding=(1, 3))
    assert not corr(3, padding=1, stride=2)


@pytest.mark.parametrize("params", [
    {"padding": 4, "dilation": 4}, {"padding": (2, 1), "dilation": (2, 3)}, {"padding": (0, 2)},
    {"padding": 3},  # beyond d (k - 1): col2im
    {"padding": (1, 3), "dilation": (1, 2)},
])
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3)])
def test_stride_one_input_gradient_both_ways(params, kernel):
    """Correlation and col2im give PyTorch's input gradient, off the flat path, with a
    random upstream gradient and more channels than the hypothesis cases draw."""
    torch = _torch()
    rng = np.random.default_rng(11)
    x, w = _normal(rng, (2, 5, 9, 7)), _normal(rng, (6, 5, *kernel))
    g = conv.geometry("t", 9, 7, kernel, 1, params.get("padding", 0), params.get("dilation", 1))
    dy = _normal(rng, (2, 6, *g.out))
    xt = mb.Tensor(x, requires_grad=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_flat, "FLAT_MAX_CHANNELS", 0)
        F.conv2d(xt, mb.Tensor(w), **params).backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.conv2d(tx, torch.tensor(w), **params).backward(torch.tensor(dy))
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "x_shape, w_shape, params, with_bias",
    [
        ((2, 2, 5, 4), (3, 2, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1)}, True),
        ((1, 2, 6, 6), (2, 2, 3, 3), {"stride": 2, "padding": 2, "dilation": 2}, False),
        ((2, 3, 3, 4), (2, 3, 1, 1), {}, True),
        ((1, 1, 4, 3), (2, 1, 2, 2), {"padding": (0, 1)}, True),
        ((2, 2, 6, 5), (2, 2, 3, 3), {"padding": (2, 1), "dilation": (2, 1)}, True),  # BAM's kind
    ],
)
@pytest.mark.parametrize("flat", [False, True])
def test_conv2d_gradcheck(monkeypatch, x_shape, w_shape, params, with_bias, flat):
    """``flat``: stride-1 cases forced onto the flat layout (docs/performance.md)."""
    monkeypatch.setattr(conv_flat, "FLAT_MAX_WASTE", float("inf") if flat else -1.0)
    monkeypatch.setattr(conv_flat, "FLAT_MIN_CHANNELS", 1)
    rng = np.random.default_rng(3)
    inputs = [
        mb.Tensor(_normal(rng, x_shape), requires_grad=True),
        mb.Tensor(_normal(rng, w_shape), requires_grad=True),
        mb.Tensor(_normal(rng, w_shape[:1]), requires_grad=True) if with_bias else None,
    ]
    assert mb.gradcheck(lambda x, wt, b: F.conv2d(x, wt, b, **params), inputs, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------- im2col and col2im


@given(case=conv_cases())
def test_im2col_is_torch_unfold_and_col2im_is_fold(case):
    """The documented layout (N, C*kH*kW, oH*oW) is PyTorch's; col2im sums like fold."""
    torch = _torch()
    n, c, _, h, w, k, params, seed = case
    rng = np.random.default_rng(seed)
    x = _normal(rng, (n, c, h, w))
    cols = im2col(x, k, **params)
    np.testing.assert_array_equal(cols, torch.nn.functional.unfold(torch.tensor(x), k, **params).numpy())
    c_in = _normal(rng, cols.shape)
    back = col2im(c_in, x.shape, k, **params)
    ref = torch.nn.functional.fold(torch.tensor(c_in), (h, w), k, **params).numpy()
    np.testing.assert_allclose(back, ref, rtol=1e-12, atol=1e-12)


@given(case=conv_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    r"""$\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$."""
    n, c, _, h, w, k, params, seed = case
    rng = np.random.default_rng(seed)
    x = _normal(rng, (n, c, h, w))
    cols = im2col(x, k, **params)
    c_in = _normal(rng, cols.shape)
    back = col2im(c_in, x.shape, k, **params)
    assert back.shape == x.shape
    lhs, rhs = np.vdot(cols, c_in), np.vdot(x, back)
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def test_im2col_layout_by_hand():
    """Row (c*kH + i)*kW + j, column a*oW + b holds x_padded[c, a*s + i*d, b*s + j*d]."""
    x = np.arange(2 * 4 * 5, dtype=np.float64).reshape(1, 2, 4, 5)
    cols = im2col(x, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1))
    assert cols.shape == (1, 2 * 2 * 3, 2 * 3)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1)))
    for ch in range(2):
        for i in range(2):
            for j in range(3):
                for a in range(2):
                    for b in range(3):
                        expected = padded[0, ch, a + 2 * i, 2 * b + j]
                        assert cols[0, (ch * 2 + i) * 3 + j, a * 3 + b] == expected


# ------------------------------------------------------------- dtypes, mutation


@pytest.mark.parametrize(
    "kernel, params", [((3, 3), {"padding": 4, "dilation": 4}), ((1, 1), {}), ((2, 3), {"stride": 2})]
)
def test_float32_end_to_end(kernel, params):
    torch = _torch()
    rng = np.random.default_rng(5)
    x = _normal(rng, (2, 4, 9, 8), np.float32)
    weight, bias = _normal(rng, (3, 4, *kernel), np.float32), _normal(rng, (3,), np.float32)
    xt, wt, bt = (mb.Tensor(a, requires_grad=True) for a in (x, weight, bias))
    y = F.conv2d(xt, wt, bt, **params)
    assert y.dtype == np.float32
    upstream = random_upstream(y.shape, 2, np.float32)
    y.backward(upstream)
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    ty = torch.nn.functional.conv2d(*tensors, **params)
    ty.backward(torch.tensor(upstream))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    for ours, theirs in zip((xt, wt, bt), tensors, strict=True):
        assert ours.grad.dtype == np.float32
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-4, atol=1e-4)

    cols = im2col(x, kernel, **params)
    assert cols.dtype == np.float32
    assert col2im(cols, x.shape, kernel, **params).dtype == np.float32


@pytest.mark.parametrize("kernel, params", [((3, 3), {"padding": 1}), ((1, 1), {})])
def test_mixed_dtypes_promote_as_numpy(kernel, params):
    rng = np.random.default_rng(0)
    x, weight = _normal(rng, (1, 2, 5, 5), np.float32), _normal(rng, (3, 2, *kernel))
    xt, wt = mb.Tensor(x, requires_grad=True), mb.Tensor(weight, requires_grad=True)
    y = F.conv2d(xt, wt, **params)
    assert y.dtype == np.float64
    upstream = random_upstream(y.shape, 0)
    y.backward(upstream)
    assert xt.grad.dtype == np.float32 and wt.grad.dtype == np.float64
    x64 = mb.Tensor(x.astype(np.float64), requires_grad=True)
    F.conv2d(x64, mb.Tensor(weight), **params).backward(upstream)
    np.testing.assert_allclose(xt.grad, x64.grad, rtol=1e-6)


def test_im2col_col2im_do_not_mutate_inputs():
    rng = np.random.default_rng(1)
    x = _normal(rng, (2, 3, 6, 5))
    x_before = x.copy()
    cols = im2col(x, 3, stride=2, padding=2, dilation=2)
    np.testing.assert_array_equal(x, x_before)
    cols_before = cols.copy()
    col2im(cols, x.shape, 3, stride=2, padding=2, dilation=2)
    np.testing.assert_array_equal(cols, cols_before)
    # A non-contiguous input is read correctly and left alone too.
    xt = x.transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(im2col(xt, 2), im2col(np.ascontiguousarray(xt), 2))


# ------------------------------------------------------------------------- errors


def _t(shape):
    return mb.Tensor(np.zeros(shape))


X, W = _t((2, 3, 5, 6)), _t((4, 3, 3, 3))


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: F.conv2d(np.zeros((2, 3, 5, 6)), W), TypeError, "x must be a minibam Tensor"),
        (lambda: F.conv2d(X, np.zeros((4, 3, 3, 3))), TypeError, "weight must be a minibam Tensor"),
        (lambda: F.conv2d(X, W, np.zeros(4)), TypeError, "bias must be a minibam Tensor"),
        (lambda: F.conv2d(_t((3, 5, 6)), W), ValueError, r"x must be \(N, C, H, W\).*\(3, 5, 6\)"),
        (lambda: F.conv2d(X, _t((4, 3, 3))), ValueError, r"weight must be .*\(4, 3, 3\)"),
        (lambda: F.conv2d(X, _t((4, 2, 3, 3))), ValueError, r"x has 3 channels.*weight expects 2"),
        (lambda: F.conv2d(X, _t((4, 3, 0, 3))), ValueError, "empty kernel"),
        (lambda: F.conv2d(X, W, _t((3,))), ValueError, r"bias must have shape \(4,\).*\(3,\)"),
        (lambda: F.conv2d(X, W, _t((4, 1))), ValueError, r"bias must have shape \(4,\)"),
        (lambda: F.conv2d(X, W, stride=0), ValueError, "stride must be >= 1"),
        (lambda: F.conv2d(X, W, stride=(1, 0)), ValueError, "stride must be >= 1"),
        (lambda: F.conv2d(X, W, padding=-1), ValueError, "padding must be >= 0"),
        (lambda: F.conv2d(X, W, dilation=0), ValueError, "dilation must be >= 1"),
        (lambda: F.conv2d(X, W, stride=1.5), TypeError, "stride must be an int or a pair"),
        (lambda: F.conv2d(X, W, padding=(1, 1, 1)), ValueError, "padding must be an int or a pair"),
        (lambda: F.conv2d(X, W, dilation=True), TypeError, "dilation must be an int or a pair"),
        (
            lambda: F.conv2d(X, W, dilation=3),
            ValueError,
            r"empty output.*H=5, W=6.*kernel_size \(3, 3\), dilation \(3, 3\), padding \(0, 0\), stride \(1, 1\)",
        ),
        (lambda: im2col(X, 3), TypeError, "im2col: x must be an np.ndarray"),
        (lambda: im2col(np.zeros((5, 6)), 3), ValueError, r"im2col: x must be \(N, C, H, W\)"),
        (lambda: im2col(np.zeros((1, 1, 5, 6)), 0), ValueError, "kernel_size must be >= 1"),
        (lambda: im2col(np.zeros((1, 1, 2, 6)), 3), ValueError, "im2col: empty output.*H=2, W=6"),
        (lambda: col2im([1.0], (1, 1, 3, 3), 3), TypeError, "col2im: cols must be an np.ndarray"),
        (lambda: col2im(np.zeros((1, 9, 1)), (1, 3, 3), 3), TypeError, "input_shape must be a tuple of 4"),
        (lambda: col2im(np.zeros((1, 9, 1)), (1, 1, -3, 3), 3), ValueError, "must not be negative"),
        (
            lambda: col2im(np.zeros((1, 9, 2)), (1, 1, 3, 3), 3),
            ValueError,
            r"cols must have shape .*\(1, 9, 1\).*got \(1, 9, 2\)",
        ),
        (lambda: col2im(np.zeros((1, 9, 1)), (1, 1, 3, 3), 3, padding=-1), ValueError, "padding"),
    ],
)
def test_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
