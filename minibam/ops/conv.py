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
viewed as (N, C, H * W) (the fast path, ``minibam.backends.conv``, skips the copy).
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


def unfold(x: np.ndarray, g: Geometry, out: np.ndarray | None = None,
           padded: np.ndarray | None = None) -> np.ndarray:
    """im2col without the argument checks (``g`` comes from [`geometry`][minibam.ops.conv.geometry]).

    ``out`` (the columns) and ``padded`` (the zero-padded copy of x), when given, are
    written instead of new arrays: the fast path passes buffers it reuses.
    """
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (oh, ow) = g.kernel, g.padding, g.out
    if ph or pw:
        if padded is None:
            padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
        else:
            padded.fill(0)
        padded[:, :, ph : ph + h, pw : pw + w] = x
    else:
        padded = x
    shape = (n, c, kh, kw, oh, ow)
    cols = np.empty(shape, dtype=x.dtype) if out is None else out.reshape(shape)
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

    See docs/derivations/conv.md, "Forward as a matrix product" and "Backward". The fast
    path (``minibam.backends.conv``) computes the same sums without im2col's copies
    where that pays.
    """

    @staticmethod
    def forward(
        ctx: Context, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, g: Geometry
    ) -> np.ndarray:
        n, o = x.shape[0], weight.shape[0]
        cols = unfold(x, g)  # X_n: (N, C kH kW, oH oW)
        y = np.matmul(weight.reshape(o, -1), cols)  # W X_n: (N, O, oH oW)
        if bias is not None:
            y = y + bias[:, None]
        ctx.x_shape, ctx.geometry = x.shape, g
        ctx.save_for_backward(cols, weight)
        return y.reshape(n, o, *g.out)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        cols, weight = ctx.saved
        n, o = grad.shape[:2]
        c, g = ctx.x_shape[1], ctx.geometry
        g3 = grad.reshape(n, o, -1)  # dY_n: (N, O, oH oW)
        gb = g3.sum(axis=(0, 2))
        gw = np.matmul(g3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(weight.shape)  # sum_n dY_n X_n^T
        d_cols = np.matmul(weight.reshape(o, -1).T, g3)  # W^T dY_n: (N, C kH kW, oH oW)
        slabs = d_cols.reshape(n, c, *g.kernel, *g.out)
        gx = fold(lambda i, j: slabs[:, :, i, j], ctx.x_shape, g, d_cols.dtype)  # col2im
        return gx, gw, gb


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
