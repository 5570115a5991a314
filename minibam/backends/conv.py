"""Convolutions, fast: ``minibam.ops.conv.Conv2d`` with fewer copies and larger products.

The plain op (docs/derivations/conv.md) always builds im2col's columns, a copy of x
kH kW times over, and forms $\bar x$ by col2im. This twin computes the same sums
(docs/performance.md explains each):

- a 1x1 kernel with stride 1 and no padding reads x itself as its columns: no im2col,
  no col2im (docs/derivations/conv.md, "1x1 convolution").
- other stride-1 convolutions with few channels run on the flat padded layout
  (`conv_flat`): kH kW matrix products on views of one padded copy of x
  (docs/performance.md, "Stride-1 convolutions without im2col").
- for stride 1, $\bar x$ is a correlation of $\bar y$ with the flipped kernel: one large
  matrix product instead of col2im's kH kW small ones
  (docs/derivations/conv.md, "Stride 1: the input gradient is a convolution too").
- convolutions with at least 8 channels where padding zeros are a large share of the
  products (BAM's dilated 3x3 at 14 x 14; at 28 x 28 in float64) skip those products:
  one matrix product per region of pixels that share their valid taps
  (`conv_regions`; docs/fast-kernels.md).
- the columns are kept for backward only when the weight needs a gradient.

Tested against the plain op in tests/test_backends.py and tests/test_conv.py.
"""

from __future__ import annotations

import numpy as np

from minibam.backends import allocator, conv_regions, scratch
from minibam.backends.conv_flat import flat_backward, flat_forward, flat_pays, pad_flat
from minibam.function import Context
from minibam.ops.conv import Conv2d, Geometry, fold, geometry, unfold


class FastConv2d(Conv2d):
    """`Conv2d` with the paths above; the walk calls this class's backward after its forward.

    What is saved for dW: the input's columns (im2col's, the regions', or the flat padded
    copy) when freed memory is kept for reuse (`allocator.freed_memory_kept`); otherwise x itself,
    and backward rebuilds the columns into reused buffers (`scratch`): a copy, instead
    of a fresh array whose every page faults, each step. Nothing when W needs no gradient.
    """

    @staticmethod
    def forward(
        ctx: Context, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, g: Geometry
    ) -> np.ndarray:
        n, c, h, w = x.shape
        o = weight.shape[0]
        ctx.x_shape, ctx.x_dtype, ctx.geometry = x.shape, x.dtype, g
        ctx.path = _path(c, h, w, g, np.result_type(x, weight).itemsize)
        need_w = ctx.needs_input_grad[1]
        ctx.kept = need_w and (ctx.path == "pointwise" or allocator.freed_memory_kept())
        if ctx.path == "regions":
            xt = conv_regions.batch_last(x)
            y, regions = conv_regions.regions_forward(xt, weight, g, keep=ctx.kept)
            columns_ = regions if ctx.kept else xt
        elif ctx.path == "flat":
            y, columns_ = flat_forward(x, weight, g, keep=ctx.kept)
        elif ctx.path == "pointwise":
            columns_ = x.reshape(n, c, h * w)
            y = np.matmul(weight.reshape(o, -1), columns_)  # (O, K) @ (N, K, L) -> (N, O, L)
        else:
            columns_ = columns(x, g, temporary=not ctx.kept)
            y = np.matmul(weight.reshape(o, -1), columns_)  # (O, K) @ (N, K, L) -> (N, O, L)
            if not ctx.kept:
                scratch.give(columns_)
        if bias is not None:
            b = bias[:, None, None] if y.ndim == 4 else bias[:, None]
            y = np.add(y, b, out=y) if np.result_type(y, b) == y.dtype else y + b
        saved = None
        if need_w:
            saved = columns_ if ctx.kept else (xt if ctx.path == "regions" else x)
        ctx.save_for_backward(saved, weight)
        return y.reshape(n, o, *g.out)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        saved, weight = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        n, o = grad.shape[:2]
        g3 = grad.reshape(n, o, -1)
        gb = g3.sum(axis=2).sum(axis=0) if need_b else None
        if ctx.path == "regions":
            return (*_regions_backward(ctx, grad, weight, saved), gb)
        if ctx.path == "flat":
            return (*_flat_backward(ctx, grad, weight, saved), gb)
        gx = gw = None
        if need_w:
            cols = saved if ctx.kept else columns(saved, ctx.geometry, temporary=True)
            # (K, L) @ (L, O) per sample, summed over the batch: OpenBLAS runs this
            # orientation about twice as fast as (O, L) @ (L, K).
            gw = np.matmul(cols, g3.transpose(0, 2, 1)).sum(axis=0).T.reshape(weight.shape)
            if not ctx.kept:
                scratch.give(cols)
        if need_x:
            gx = _input_grad(ctx, grad, weight)
        return gx, gw, gb


def _path(c: int, h: int, w: int, g: Geometry, itemsize: int = 4) -> str:
    """Which kernel runs a convolution: "regions", "flat", "pointwise" or "columns" (im2col)."""
    regions = conv_regions.regions_pay(c, h, w, g, itemsize)
    if flat_pays(c, w, g) and not (regions and conv_regions.skipped_share(h, w, g) >= conv_regions.REGIONS_OVER_FLAT):
        return "flat"
    if regions:
        return "regions"
    return "pointwise" if g.is_pointwise else "columns"


def _input_grad(ctx: Context, grad: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """$\\bar x$ on the im2col and 1x1 paths."""
    g, (n, o) = ctx.geometry, grad.shape[:2]
    g3 = grad.reshape(n, o, -1)
    if g.is_pointwise:
        # Written through a view into a fresh array of x's shape, so the engine
        # can keep it as x.grad without copying (a reshaped result is a view).
        gx = np.empty(ctx.x_shape, dtype=np.result_type(weight, grad))
        np.matmul(weight.reshape(o, -1).T, g3, out=gx.reshape(n, ctx.x_shape[1], -1))
        return gx
    if _correlation_pays(g):
        return _input_grad_by_correlation(grad, weight, g)
    c = ctx.x_shape[1]
    return fold(lambda i, j: np.matmul(weight[:, :, i, j].T, g3).reshape(n, c, *g.out),
                ctx.x_shape, g, np.result_type(weight, grad))


def _flat_backward(ctx: Context, grad: np.ndarray, weight: np.ndarray,
                   saved: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """dW on the flat layout (from the kept padded copy, or one rebuilt into `scratch`);
    $\\bar x$ as a correlation where that pays."""
    need_x, need_w = ctx.needs_input_grad[:2]
    g = ctx.geometry
    by_correlation = need_x and _correlation_pays(g)
    flat = saved
    if need_w and not ctx.kept:
        flat, _ = pad_flat(saved, g, temporary=True)
    gx, gw = flat_backward(grad, flat, weight, ctx.x_shape, g, need_x and not by_correlation, need_w)
    if need_w and not ctx.kept:
        scratch.give(flat)
    if by_correlation:
        gx = _input_grad_by_correlation(grad, weight, g)
    return gx, gw


def _regions_backward(ctx: Context, grad: np.ndarray, weight: np.ndarray,
                      saved: list | np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    r"""dW region by region (from the kept columns, or rebuilt from x with the batch last
    into `scratch`); $\bar x$ as the correlation of $\bar y$ with the flipped kernel
    (`_input_grad_by_correlation`'s derivation), by `conv_regions` too."""
    need_x, need_w = ctx.needs_input_grad[:2]
    g = ctx.geometry
    gt = conv_regions.batch_last(grad, temporary=True)
    gx = gw = None
    if need_w:
        regions = saved if ctx.kept else conv_regions.region_columns(saved, g, temporary=True)
        gw = conv_regions.regions_weight_grad(gt, regions, weight.shape, np.result_type(grad, ctx.x_dtype))
        if not ctx.kept:
            conv_regions.give_back(regions)
    if need_x and g.stride != (1, 1):  # not a convolution of the same kind: col2im's products
        gx = _input_grad(ctx, grad, weight)
    elif need_x:
        (kh, kw), (dh, dw), (ph, pw) = g.kernel, g.dilation, g.padding
        back = geometry("conv2d", *g.out, g.kernel, 1, (dh * (kh - 1) - ph, dw * (kw - 1) - pw), g.dilation)
        flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, kH, kW)
        gx, _ = conv_regions.regions_forward(gt, flipped, back, keep=False)
    scratch.give(gt)
    return gx, gw


def _correlation_pays(g: Geometry) -> bool:
    r"""Whether a stride-1 input gradient is computed as a correlation (see below): it
    needs the gradient padded by $d (k - 1) - p \ge 0$ on each side."""
    return g.stride == (1, 1) and all(
        p <= d * (k - 1) for k, p, d in zip(g.kernel, g.padding, g.dilation, strict=True)
    )


def _input_grad_by_correlation(grad: np.ndarray, weight: np.ndarray, g: Geometry) -> np.ndarray:
    r"""$\bar x$ of a stride-1 convolution as a stride-1 correlation of $\bar y$.

    From $y[a, b] = \sum_{c,i,j} W[o, c, i, j]\, x[a + i d - p, b + j d - p]$ (per
    axis), $\bar x[u] = \sum_{o,i} W[o, c, i]\, \bar y[u + p - i d]$; with
    $i' = k - 1 - i$ that is $\sum_{o,i'} W[o, c, k - 1 - i']\, \bar y[u - p' + i' d]$,
    $p' = d (k - 1) - p$: a correlation of $\bar y$, zero-padded by $p'$, with the
    kernel flipped in both spatial axes and its two channel axes swapped, at the same
    dilation; its output is exactly H x W. So it is im2col of $\bar y$ and one matrix
    product (or, where it pays, the flat stride-1 forward), instead of `fold`'s kH kW
    small products and strided additions (or the flat backward's), faster on two
    threads, as the product is one large BLAS call.

    Derivation: docs/derivations/conv.md, "Stride 1: the input gradient is a convolution too".
    Measured: docs/performance.md, "The input gradient as a correlation".
    """
    (kh, kw), (dh, dw), (ph, pw) = g.kernel, g.dilation, g.padding
    n, o, oh, ow = grad.shape
    back = geometry("conv2d", oh, ow, g.kernel, 1, (dh * (kh - 1) - ph, dw * (kw - 1) - pw), g.dilation)
    flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, kH, kW)
    if flat_pays(o, ow, back):  # the correlation is itself a stride-1 convolution
        gx, _ = flat_forward(grad, flipped, back, keep=False)
        return gx.reshape(n, -1, *back.out)
    cols = columns(grad, back, temporary=True)
    gx = np.matmul(flipped.reshape(flipped.shape[0], -1), cols).reshape(n, -1, *back.out)
    scratch.give(cols)
    return gx


def columns(x: np.ndarray, g: Geometry, temporary: bool) -> np.ndarray:
    """im2col's columns (``minibam.ops.conv.unfold``, same layout), the padded copy of x
    always and the columns themselves when ``temporary`` taken from `scratch` (the
    caller gives them back): a training step makes the same ones every step, and a
    fresh array pays a page fault per page. Derivation: docs/derivations/conv.md, "im2col"."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (oh, ow) = g.kernel, g.padding, g.out
    padded = scratch.take((n, c, h + 2 * ph, w + 2 * pw), x.dtype) if ph or pw else None
    shape = (n, c * kh * kw, oh * ow)
    cols = scratch.take(shape, x.dtype) if temporary else np.empty(shape, x.dtype)
    unfold(x, g, out=cols, padded=padded)  # writes into cols (a buffer scratch can take back)
    if padded is not None:
        scratch.give(padded)
    return cols


