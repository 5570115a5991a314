"""Stride-1 convolutions without im2col: the flat padded layout.

Zero-pad the input and flatten each channel's plane, row after row (`pad_flat`, row
length Wp). For a stride-1 convolution, the values kernel offset (i, j) reads for all
output pixels form one contiguous run of that buffer, starting at
$i d_H W_p + j d_W$ (`flat_offset`), if the output is computed on rows of Wp values and
the last Wp - oW of each row thrown away. So the convolution is kH kW matrix products on
views of one padded copy of x, with no copy of x kH kW times. Derivation and
measurements: docs/performance.md, "Stride-1 convolutions without im2col".
`minibam.backends.conv.FastConv2d` decides when to take this path (`flat_pays`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from minibam.backends import scratch

if TYPE_CHECKING:
    from minibam.ops.conv import Geometry  # noqa: F401 - for the annotations only


def pad_flat(x: np.ndarray, g: Geometry, temporary: bool = False) -> tuple[np.ndarray, int]:
    """``x`` zero-padded, each (channel) plane flattened: (N, C, Hp * Wp + tail), and Wp.

    The layout of the stride-1 path (see `Conv2d`): in it, kernel offset (i, j)
    reads, for every output pixel at once, one contiguous run of ``oH * Wp`` values
    starting at `flat_offset`. The ``(kW - 1) dW`` zeros of the tail let the last
    offset's run end inside the buffer. ``temporary``: the buffer comes from `scratch`
    (the caller gives it back).
    """
    n, c, h, w = x.shape
    (ph, pw), (kw, dw) = g.padding, (g.kernel[1], g.dilation[1])
    hp, wp = h + 2 * ph, w + 2 * pw
    shape = (n, c, hp * wp + (kw - 1) * dw)
    flat = scratch.take(shape, x.dtype) if temporary else np.empty(shape, x.dtype)
    flat.fill(0)
    flat[:, :, : hp * wp].reshape(n, c, hp, wp)[:, :, ph : ph + h, pw : pw + w] = x
    return flat, wp


def flat_offset(g: Geometry, wp: int, i: int, j: int) -> int:
    """Where kernel offset (i, j)'s run starts in `pad_flat`'s layout."""
    return i * g.dilation[0] * wp + j * g.dilation[1]


# When the flat layout beats im2col (measured in docs/performance.md, section
# "Stride-1 convolutions without im2col"): few input channels, where im2col's copies cost more
# than the small products, but not one to three, where each product sums over so few
# terms that BLAS runs far below speed; and little waste, the Wp - oW discarded values
# of each row.
FLAT_MIN_CHANNELS = 4
FLAT_MAX_CHANNELS = 16
FLAT_MAX_WASTE = 0.2


def flat_pays(channels: int, width: int, g: Geometry) -> bool:
    """Whether a convolution takes the stride-1 flat path (see `Conv2d`)."""
    if g.stride != (1, 1) or g.is_pointwise or not FLAT_MIN_CHANNELS <= channels <= FLAT_MAX_CHANNELS:
        return False
    wp = width + 2 * g.padding[1]
    return wp - g.out[1] <= FLAT_MAX_WASTE * g.out[1]


def flat_forward(x: np.ndarray, weight: np.ndarray, g: Geometry,
                 keep: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    r"""Stride-1 forward, $Y = \sum_{i,j} W_{:,:,i,j} X_{(i,j)}$, on `pad_flat`'s layout.

    Returns y as (N, O, oH * oW) and the padded input (for dW) when ``keep``, else None
    (then the padded input was a temporary from `scratch`).
    """
    n = x.shape[0]
    o, (oh, ow) = weight.shape[0], g.out
    flat, wp = pad_flat(x, g, temporary=not keep)
    run = oh * wp  # oH rows of Wp: the last Wp - oW values of each row are discarded
    dtype = np.result_type(x, weight)
    # Both temporaries come from `scratch` (reused between steps: no fresh pages) and go
    # back before returning; the result is a fresh array.
    total, term = scratch.take((n, o, run), dtype), scratch.take((n, o, run), dtype)
    total.fill(0)
    for i in range(g.kernel[0]):
        for j in range(g.kernel[1]):
            start = flat_offset(g, wp, i, j)
            # (O, C) @ (N, C, run): a read-only view of the buffer, no copy
            np.matmul(weight[:, :, i, j], flat[:, :, start : start + run], out=term)
            total += term
    y = np.ascontiguousarray(total.reshape(n, o, oh, wp)[:, :, :, :ow]).reshape(n, o, oh * ow)
    scratch.give(total)
    scratch.give(term)
    if not keep:
        scratch.give(flat)
        flat = None
    return y, flat


def flat_backward(grad: np.ndarray, flat: np.ndarray | None, weight: np.ndarray, x_shape: tuple[int, ...],
                   g: Geometry, need_x: bool, need_w: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    r"""Stride-1 backward on `pad_flat`'s layout: per kernel offset (i, j),
    $\bar W_{:,:,i,j} = \sum_n \bar Y_n X_{n,(i,j)}^\top$ and
    $\bar X_{(i,j)} \mathrel{+}= W_{:,:,i,j}^\top \bar Y$, then the padding is cut off."""
    n, c, h, w = x_shape
    o, (oh, ow), (ph, pw) = weight.shape[0], g.out, g.padding
    hp, wp = h + 2 * ph, w + 2 * pw
    run = oh * wp
    dtype = np.result_type(weight, grad)
    # dY on the flat layout: zeros in the discarded columns, so they add nothing anywhere.
    g_planes = scratch.take((n, o, oh, wp), grad.dtype)  # temporaries from `scratch`, given back below
    g_planes[:, :, :, ow:] = 0
    g_planes[:, :, :, :ow] = grad
    g_flat = g_planes.reshape(n, o, run)
    gx = gw = None
    if need_w:
        gw = np.empty(weight.shape, dtype=np.result_type(flat, grad))
    if need_x:
        gx_flat = scratch.take((n, c, flat_length := hp * wp + (g.kernel[1] - 1) * g.dilation[1]), dtype)
        gx_flat.fill(0)
        term = scratch.take((n, c, run), dtype)
    for i in range(g.kernel[0]):
        for j in range(g.kernel[1]):
            start = flat_offset(g, wp, i, j)
            if need_w:
                window = flat[:, :, start : start + run]
                # (C, run) @ (run, O): the faster orientation for OpenBLAS, as in im2col's dW
                gw[:, :, i, j] = np.matmul(window, g_flat.transpose(0, 2, 1)).sum(axis=0).T
            if need_x:
                np.matmul(weight[:, :, i, j].T, g_flat, out=term)
                gx_flat[:, :, start : start + run] += term
    if need_x:
        planes = gx_flat[:, :, : flat_length - (g.kernel[1] - 1) * g.dilation[1]].reshape(n, c, hp, wp)
        gx = np.ascontiguousarray(planes[:, :, ph : ph + h, pw : pw + w])
        scratch.give(gx_flat)
        scratch.give(term)
    scratch.give(g_planes)
    return gx, gw
