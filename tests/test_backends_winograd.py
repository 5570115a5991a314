"""Winograd F(2x2, 3x3) on the dilated lattice (minibam/backends/conv_winograd.py) against
the plain op (minibam/ops/conv.py: im2col and col2im).

Tolerance, relative to the largest value compared (`test_backends._assert_close`):
float64 1e-12. float32 2e-5, the bound of every fast kernel: F(2x2, 3x3)'s transforms
only add, subtract and halve, so its round-off stays of the order of the direct sum's.
Measured against a float64 reference (torch), random cases up to 64 channels and maps up
to 30 x 30: worst 9e-7 for dW, 4e-7 for y and dx, where torch's float32 convolution
itself is off by 1.4e-6 and 5e-7 (docs/fast-kernels.md, "Winograd F(2 x 2, 3 x 3)").
Both sides round in float32, so 2e-5 leaves a tenfold margin over their sum.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_backends import _assert_close

import minibam as mb
from minibam import functional as F
from minibam.backends import allocator, conv_winograd, fast, scratch
from minibam.ops.conv import geometry


@st.composite
def lattice_cases(draw):
    """3x3, stride 1, padding = dilation d in 1..4 (each axis its own): tiny maps, maps
    smaller than d, sizes that are no multiple of d or of 2 d (padded sub-grids)."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    d = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    dy = rng.standard_normal((n, o, h, w)).astype(dtype)  # a random upstream gradient
    return x, weight, bias, dy, d, dtype


def _plain(x, weight, bias, dy, d):
    """y, dx, dW, db by the plain op."""
    with fast.flags(enabled=False):
        tensors = [mb.Tensor(a, requires_grad=True) for a in (x, weight, bias)]
        y = F.conv2d(*tensors, padding=d, dilation=d)
        y.backward(dy)
    return [y.data] + [t.grad for t in tensors]


def _winograd(x, weight, bias, dy, d, kept, need_x=True, need_w=True):
    """y, dx, dW, db by conv_winograd (db is the sum of dY, as on every path)."""
    g = geometry("conv2d", x.shape[2], x.shape[3], 3, 1, d, d)
    y, v = conv_winograd.winograd_forward(x, weight, g, keep=kept)
    assert (v is not None) == kept
    gx, gw = conv_winograd.winograd_backward(dy, v if kept else x, weight, x.shape, g, kept, need_x, need_w)
    return [y + bias[:, None, None], gx, gw, dy.sum(axis=(0, 2, 3))]


@settings(max_examples=80, deadline=None)
@given(case=lattice_cases(), kept=st.booleans())
def test_winograd_matches_the_plain_op(case, kept):
    """Forward, dx, dW and db; V kept from forward or rebuilt from x in backward; the
    caller's arrays untouched."""
    x, weight, bias, dy, d, dtype = case
    before = [a.copy() for a in (x, weight, dy)]
    _assert_close(_plain(x, weight, bias, dy, d), _winograd(x, weight, bias, dy, d, kept), dtype)
    for a, b in zip((x, weight, dy), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("need_x,need_w", [(True, False), (False, True)])
def test_only_the_gradients_asked_for(need_x, need_w):
    rng = np.random.default_rng(3)
    x, weight, dy = (rng.standard_normal(s) for s in ((2, 3, 9, 7), (4, 3, 3, 3), (2, 4, 9, 7)))
    g = geometry("conv2d", 9, 7, 3, 1, 2, 2)
    gx, gw = conv_winograd.winograd_backward(dy, x, weight, x.shape, g, False, need_x, need_w)
    assert (gx is not None) == need_x and (gw is not None) == need_w
    _, plain_gx, plain_gw, _ = _plain(x, weight, np.zeros(4), dy, 2)
    if need_x:
        np.testing.assert_allclose(gx, plain_gx, rtol=0, atol=1e-12 * np.abs(plain_gx).max())
    if need_w:
        np.testing.assert_allclose(gw, plain_gw, rtol=0, atol=1e-12 * np.abs(plain_gw).max())


def test_results_never_share_memory_with_reused_buffers(monkeypatch):
    """A second call (whose temporaries come from `scratch`) leaves the first call's
    results as they were: none of them is a pooled buffer."""
    monkeypatch.setattr(allocator, "freed_memory_kept", lambda: False)  # the pool in use
    rng = np.random.default_rng(4)
    x1, x2 = rng.standard_normal((2, 4, 4, 14, 14)).astype(np.float32)
    weight = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    dy1, dy2 = rng.standard_normal((2, 4, 8, 14, 14)).astype(np.float32)
    g = geometry("conv2d", 14, 14, 3, 1, 4, 4)
    first = [*conv_winograd.winograd_forward(x1, weight, g, keep=True),
             *conv_winograd.winograd_backward(dy1, x1, weight, x1.shape, g, False, True, True)]
    copies = [a.copy() for a in first]
    conv_winograd.winograd_forward(x2, weight, g, keep=False)
    conv_winograd.winograd_backward(dy2, x2, weight, x2.shape, g, False, True, True)
    for a, b in zip(first, copies, strict=True):
        np.testing.assert_array_equal(a, b)
    scratch.release()


@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    (3, 2, 1, 1),        # strided
    (3, 1, 1, 2),        # padding != dilation
    (3, 1, 0, 1),        # no padding
    (2, 1, 1, 1),        # not 3x3
    ((3, 1), 1, 1, 1),
    (5, 1, 2, 1),
])
def test_refuses_the_geometries_it_does_not_compute(kernel, stride, padding, dilation):
    g = geometry("conv2d", 12, 12, kernel, stride, padding, dilation)
    assert not conv_winograd.covers(g)
    x = np.zeros((1, 2, 12, 12))
    weight = np.zeros((2, 2, *g.kernel))
    with pytest.raises(ValueError, match="conv_winograd: only 3x3 kernels with stride 1"):
        conv_winograd.winograd_forward(x, weight, g, keep=False)


def test_covers_bams_dilated_convolutions():
    assert conv_winograd.covers(geometry("conv2d", 14, 14, 3, 1, 4, 4))
    assert conv_winograd.covers(geometry("conv2d", 14, 14, 3, 1, (1, 3), (1, 3)))


@pytest.mark.parametrize("h,d,tiles_per_axis", [(56, 4, 7), (28, 4, 4), (14, 4, 2), (32, 4, 4), (5, 1, 3)])
def test_products_counted(h, d, tiles_per_axis):
    """16 products (O, C) @ (C, P): 4 multiplications per output pixel and channel pair
    of the map padded to whole tiles of every sub-grid, 2 t d per axis."""
    n, c, o = 3, 5, 7
    g = geometry("conv2d", h, h, 3, 1, d, d)
    products = conv_winograd.products((n, c, h, h), o, g)
    padded = 2 * tiles_per_axis * d
    assert products == 16 * o * c * n * d * d * tiles_per_axis**2 == 4 * n * o * c * padded**2
