r"""2-D convolution as a matrix product: ``im2col``, its adjoint ``col2im``, and ``conv2d``.

Derivations: docs/derivations/conv.md ("im2col", "Forward as a matrix product",
"Backward", "1x1 convolution").

Column layout (the same as ``torch.nn.functional.unfold``)
---------------------------------------------------------
For ``x`` of shape (N, C, H, W), ``im2col`` returns ``cols`` of shape

    (N, C * kH * kW, oH * oW),   row r = (c * kH + i) * kW + j,   column p = a * oW + b,

    cols[n, r, p] = x_padded[n, c, a * sH + i * dH, b * sW + j * dW]

so that column p holds the receptive field of output pixel (a, b), flattened in the
order of ``weight.reshape(O, C * kH * kW)``. Then ``weight_matrix @ cols`` is one
(batched) matrix product whose result is already (N, O, oH * oW), i.e. the output in
(N, O, oH, oW) order after a free reshape: no transpose of the output, no Python loop
over the batch. With a 1x1 kernel, stride 1 and no padding, ``cols`` is simply ``x``
viewed as (N, C, H * W), which is why those convolutions skip im2col altogether.
(The other common layout, (C*kH*kW, N*oH*oW), makes the product a single un-batched
GEMM, but then the output and its gradient need transposing; it measured no faster.)

Hyper-parameters follow PyTorch: each is an int or an (H, W) pair, dilation 1 means no
gaps, the effective kernel is d (k - 1) + 1, and the output size is
``(H + 2 p - d (k - 1) - 1) // s + 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import check_fits, optional_tensor, pair, require_ndim, require_tensor
from minibam.ops.conv_flat import flat_backward, flat_forward, flat_pays
from minibam.ops.empty import EmptyBatch
from minibam.tensor import Tensor

Pair = tuple[int, int]


class Geometry(NamedTuple):
    """Kernel, stride, padding, dilation and the output size (oH, oW), all as pairs."""

    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    out: Pair

    @property
    def is_pointwise(self) -> bool:
        """A 1x1 kernel that visits every pixel once: cols would just be a copy of x."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)


def geometry(
    op: str, height: int, width: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any
) -> Geometry:
    """Check kernel, stride, padding and dilation and work out (oH, oW).

    The one place where im2col, col2im and conv2d check their hyper-parameters.
    """
    kernel = pair(kernel_size, "kernel_size", op, 1)
    strides = pair(stride, "stride", op, 1)
    pads = pair(padding, "padding", op, 0)
    dilations = pair(dilation, "dilation", op, 1)
    out = tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip((height, width), kernel, strides, pads, dilations, strict=True)
    )
    if min(out) < 1:
        raise ValueError(
            f"{op}: empty output ({out[0]} x {out[1]}) for input H={height}, W={width} with "
            f"kernel_size {kernel}, dilation {dilations}, padding {pads}, stride {strides}: each "
            f"side needs size + 2*padding >= dilation*(kernel-1) + 1"
        )
    return Geometry(kernel, strides, pads, dilations, (int(out[0]), int(out[1])))


def check_sizes(op: str, shape: tuple[int, ...], g: Geometry, itemsize: int) -> None:
    """Refuse (``ValueError``) a padded input or a column array too big for memory,
    before NumPy is asked for it (padding=10**12 would otherwise be a MemoryError)."""
    n, c, h, w = shape
    (kh, kw), (ph, pw), (oh, ow) = g.kernel, g.padding, g.out
    check_fits(op, "the padded input", (n, c, h + 2 * ph, w + 2 * pw), itemsize,
               f" (padding {g.padding})")
    check_fits(op, "the im2col columns", (n, c * kh * kw, oh * ow), itemsize,
               f" (kernel_size {g.kernel}, stride {g.stride}, padding {g.padding}, dilation {g.dilation})")


def _window(g: Geometry, i: int, j: int) -> tuple[slice, slice]:
    """Where kernel offset (i, j) reads in the padded input, for every output pixel at once."""
    (sh, sw), (dh, dw), (oh, ow) = g.stride, g.dilation, g.out
    return (
        slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
        slice(j * dw, j * dw + sw * (ow - 1) + 1, sw),
    )


def unfold(x: np.ndarray, g: Geometry) -> np.ndarray:
    """im2col without the argument checks (``g`` comes from [`geometry`][minibam.ops.conv.geometry])."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (oh, ow) = g.kernel, g.padding, g.out
    if ph or pw:
        padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
        padded[:, :, ph : ph + h, pw : pw + w] = x
    else:
        padded = x
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = padded[(slice(None), slice(None), *_window(g, i, j))]
    return cols.reshape(n, c * kh * kw, oh * ow)


def fold(
    slab: Callable[[int, int], np.ndarray], shape: tuple[int, ...], g: Geometry, dtype: Any
) -> np.ndarray:
    """col2im without the argument checks, fed one kernel offset at a time.

    ``slab(i, j)`` is the (N, C, oH, oW) slab of the columns that kernel offset (i, j)
    read; it is added back where [`unfold`][minibam.ops.conv.unfold] took it from. Taking a function rather
    than the whole (N, C*kH*kW, oH*oW) array lets conv2d's backward compute each slab
    just in time instead of building a second array kH*kW times the size of x.
    """
    n, c, h, w = shape
    (kh, kw), (ph, pw) = g.kernel, g.padding
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            # Basic slices of one offset never overlap themselves, so += is exact;
            # overlaps between offsets are summed by the loop (np.add.at is far slower).
            padded[(slice(None), slice(None), *_window(g, i, j))] += slab(i, j)
    return padded[:, :, ph : ph + h, pw : pw + w] if ph or pw else padded


def im2col(
    x: np.ndarray, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> np.ndarray:
    """(N, C, H, W) -> (N, C*kH*kW, oH*oW): every receptive field as a column.

    See the module docstring for the layout (PyTorch's ``unfold``). ``x`` is not
    modified; the result is a new array of ``x``'s dtype.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"im2col: x must be an np.ndarray, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"im2col: x must be (N, C, H, W) (4-D), got shape {x.shape}")
    g = geometry("im2col", x.shape[2], x.shape[3], kernel_size, stride, padding, dilation)
    check_sizes("im2col", x.shape, g, x.dtype.itemsize)
    return unfold(x, g)


def col2im(
    cols: np.ndarray,
    input_shape: Any,
    kernel_size: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
) -> np.ndarray:
    r"""(N, C*kH*kW, oH*oW) -> (N, C, H, W): the adjoint of [`im2col`][minibam.ops.conv.im2col].

    $\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$: each
    column entry is added back to the input pixel it was read from, so pixels in several
    receptive fields receive a sum, padding receives nothing, and pixels no window
    visits get zero. ``cols`` is not modified.
    """
    if not isinstance(cols, np.ndarray):
        raise TypeError(f"col2im: cols must be an np.ndarray, got {type(cols).__name__}")
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 4
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in input_shape)
    ):
        raise TypeError(
            f"col2im: input_shape must be a tuple of 4 ints (N, C, H, W), got {input_shape!r}"
        )
    n, c, h, w = (int(v) for v in input_shape)
    if min(n, c, h, w) < 0:
        raise ValueError(f"col2im: input_shape must not be negative, got {input_shape!r}")
    g = geometry("col2im", h, w, kernel_size, stride, padding, dilation)
    check_sizes("col2im", (n, c, h, w), g, cols.dtype.itemsize)
    expected = (n, c * g.kernel[0] * g.kernel[1], g.out[0] * g.out[1])
    if cols.shape != expected:
        raise ValueError(
            f"col2im: cols must have shape (N, C*kH*kW, oH*oW) = {expected} for input_shape "
            f"{(n, c, h, w)}, kernel_size {g.kernel}, stride {g.stride}, padding {g.padding} and "
            f"dilation {g.dilation} (output {g.out}), got {cols.shape}"
        )
    slabs = cols.reshape(n, c, g.kernel[0], g.kernel[1], *g.out)
    return fold(lambda i, j: slabs[:, :, i, j], (n, c, h, w), g, cols.dtype)


class Conv2d(Function):
    r"""Cross-correlation, as PyTorch: x (N, C, H, W), weight (O, C, kH, kW), bias (O,).

    Forward, with $X_n = \mathrm{im2col}(x)_n$ of shape (C kH kW, oH oW) and $W$ the
    weight as an (O, C kH kW) matrix, one batched matrix product:

    $$Y_n = W X_n + b\,\mathbf 1^\top \qquad (O, oH\,oW) \text{, read as } (O, oH, oW).$$

    Backward, from $\bar Y_n$:

    $$\bar W = \sum_n \bar Y_n X_n^\top, \qquad \bar b = \sum_n \bar Y_n \mathbf 1,
    \qquad \bar x = \mathrm{col2im}(W^\top \bar Y).$$

    $W^\top \bar Y_n$ is formed one kernel offset at a time inside col2im's loop (its
    row block for offset (i, j) is $W_{:,:,i,j}^\top \bar Y_n$): the same sums, but no
    second array kH kW times the size of x. Allocating that array fresh on every call
    (page faults) cost more than all the arithmetic of the backward.
    For a 1x1 kernel with stride 1 and no padding, $X_n$ is $x_n$ itself viewed as
    (C, H W), so neither im2col nor col2im runs. See docs/derivations/conv.md,
    "Forward as a matrix product", "Backward" and "1x1 convolution".

    Any other stride-1 convolution (BAM's dilated 3x3 ones) skips im2col too: on the
    zero-padded input with each plane flattened (`conv_flat.pad_flat`, row length Wp), the
    values kernel offset (i, j) reads for all output pixels form one contiguous run
    starting at $i d_H W_p + j d_W$, if the output is computed on rows of Wp values
    and the last Wp - oW of each row thrown away. So
    $Y = \sum_{i,j} W_{:,:,i,j} X_{(i,j)}$ is kH kW matrix products on views, with no
    copy of x kH kW times; the backward runs the same sums transposed
    (`conv_flat.flat_backward`). Derivation: docs/performance.md, "Stride-1 convolutions
    without im2col".

    With stride 1 and padding at most $d (k - 1)$, $\bar x$ is computed instead as a
    correlation of $\bar y$ with the flipped kernel (`_input_grad_by_correlation`), one
    large product rather than col2im's kH kW small ones; col2im stays the path of every
    other convolution.
    """

    @staticmethod
    def forward(
        ctx: Context, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, g: Geometry
    ) -> np.ndarray:
        n, c, h, w = x.shape
        o = weight.shape[0]
        ctx.x_shape, ctx.geometry = x.shape, g
        ctx.flat = flat_pays(x.shape[1], x.shape[3], g)
        if ctx.flat:
            y, saved = flat_forward(x, weight, g)
        else:
            saved = x.reshape(n, c, h * w) if g.is_pointwise else unfold(x, g)
            y = np.matmul(weight.reshape(o, -1), saved)  # (O, K) @ (N, K, L) -> (N, O, L)
        if bias is not None:
            b = bias[:, None]
            y = np.add(y, b, out=y) if np.result_type(y, b) == y.dtype else y + b
        # The input's columns (or its padded copy) are needed only for dW; drop them otherwise.
        ctx.save_for_backward(saved if ctx.needs_input_grad[1] else None, weight)
        return y.reshape(n, o, *g.out)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        cols, weight = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        n, o = grad.shape[:2]
        g3 = grad.reshape(n, o, -1)
        gx = gw = gb = None
        if need_b:
            gb = g3.sum(axis=2).sum(axis=0)
        if ctx.flat:
            by_correlation = need_x and _correlation_pays(ctx.geometry)
            gx, gw = flat_backward(grad, cols, weight, ctx.x_shape, ctx.geometry,
                                    need_x and not by_correlation, need_w)
            if by_correlation:
                gx = _input_grad_by_correlation(grad, weight, ctx.geometry)
            return gx, gw, gb
        if need_w:
            # (K, L) @ (L, O) per sample, summed over the batch: OpenBLAS runs this
            # orientation about twice as fast as (O, L) @ (L, K).
            gw = np.matmul(cols, g3.transpose(0, 2, 1)).sum(axis=0).T.reshape(weight.shape)
        if need_x:
            g = ctx.geometry
            if g.is_pointwise:
                # Written through a view into a fresh array of x's shape, so the engine
                # can keep it as x.grad without copying (a reshaped result is a view).
                gx = np.empty(ctx.x_shape, dtype=np.result_type(weight, grad))
                np.matmul(weight.reshape(o, -1).T, g3, out=gx.reshape(n, ctx.x_shape[1], -1))
            elif _correlation_pays(g):
                gx = _input_grad_by_correlation(grad, weight, g)
            else:
                c = ctx.x_shape[1]
                dtype = np.result_type(weight, grad)
                gx = fold(
                    lambda i, j: np.matmul(weight[:, :, i, j].T, g3).reshape(n, c, *g.out),
                    ctx.x_shape, g, dtype,
                )
        return gx, gw, gb


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
        gx, _ = flat_forward(grad, flipped, back)
        return gx.reshape(n, -1, *back.out)
    cols = unfold(grad, back)
    return np.matmul(flipped.reshape(flipped.shape[0], -1), cols).reshape(n, -1, *back.out)


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
) -> Tensor:
    """2-D convolution (cross-correlation) with PyTorch's arguments and semantics.

    ``x`` (N, C, H, W), ``weight`` (O, C, kH, kW), ``bias`` (O,) or None; stride,
    padding and dilation are ints or (H, W) pairs. Returns (N, O, oH, oW).
    """
    op = "conv2d"
    require_tensor(x, "x", op)
    require_tensor(weight, "weight", op)
    optional_tensor(bias, "bias", op)
    require_ndim(x, (4,), "x", op, "(N, C, H, W)")
    require_ndim(weight, (4,), "weight", op, "(O, C, kH, kW)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"conv2d: x has {x.shape[1]} channels (shape {x.shape}) but weight expects "
            f"{weight.shape[1]} (shape {weight.shape})"
        )
    if min(weight.shape[2:]) < 1:
        raise ValueError(f"conv2d: weight has an empty kernel, shape {weight.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(
            f"conv2d: bias must have shape ({weight.shape[0]},) for weight of shape "
            f"{weight.shape}, got {bias.shape}"
        )
    g = geometry(op, x.shape[2], x.shape[3], weight.shape[2:], stride, padding, dilation)
    check_sizes(op, x.shape, g, np.result_type(x.data, weight.data).itemsize)
    if x.shape[0] == 0:  # PyTorch allows an empty batch: empty output, zero weight grads
        dtype = np.result_type(*(t.data for t in (x, weight, bias) if t is not None))
        return EmptyBatch.apply(x, weight, bias, out_shape=(0, weight.shape[0], *g.out), dtype=dtype)
    return Conv2d.apply(x, weight, bias, g=g)
