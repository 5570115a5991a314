r"""Convolutions that skip the padding: the border/interior split.

im2col copies, for every output pixel, all kH kW taps of its receptive field, and the
matrix product then multiplies every weight with every copied value, zeros of the
padding included. Along one axis, output position a's tap i reads input row
$a s + i d - p$; it reads padding when that row is outside $[0, H)$. The taps that read
inside form one interval $[i_0(a), i_1(a))$ (`valid_taps`), and it is the same interval
for a whole run of consecutive positions: one run at each border per distinct interval,
and one interior run where every tap is inside (`segments`). A region is a pair of runs,
one per axis; inside it every pixel has the same taps, so its im2col has no zero and its
product is

$$Y_R = W_{:, :, T_i, T_j}\, X_R, \qquad X_R \text{ of shape } (|T_i| |T_j| C,\ |R|\,N),$$

one matrix product per region with only the taps $T_i \times T_j$ that read the map
(docs/fast-kernels.md, "Skipping the padding: one product per region"; the sum is formula (C) of
docs/derivations/conv.md with its zero terms left out). For BAM's 3x3 convolutions with
dilation d and padding d there are three runs per axis, so nine regions: the interior
reads all nine taps, an edge six, a corner four.

Backward, from the same derivation per region: $\bar W_{:,:,T_i,T_j} \mathrel{+}=
\bar Y_R X_R^\top$, and for stride 1 the input gradient is itself a convolution
(`minibam.backends.conv`, `_input_grad_by_correlation`), run by this same kernel.

The columns are laid out (taps, C, pixels, N), from x copied once with the batch last
(`batch_last`): each region is then **one** matrix product over the whole batch, not one
small product per sample, and every copy moves runs of (region width x N) values
instead of runs of a region's width.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from minibam.backends import scratch
from minibam.backends.threads import map_chunks

if TYPE_CHECKING:
    from minibam.ops.conv import Geometry  # noqa: F401 - for the annotations only


class Segment(NamedTuple):
    """Output positions [start, stop) of one axis, all with the taps [tap0, tap1)."""

    start: int
    stop: int
    tap0: int
    tap1: int


def valid_taps(a: int, size: int, k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """The taps i of output position a that read inside the map: $0 \\le a s + i d - p < size$."""
    first = max(0, -((a * s - p) // d))  # ceil((p - a s) / d)
    last = min(k - 1, (size - 1 + p - a * s) // d)
    return first, max(first, last + 1)


@functools.lru_cache(maxsize=256)
def segments(size: int, k: int, s: int, p: int, d: int, out: int) -> tuple[Segment, ...]:
    """The runs of consecutive output positions of one axis that share their valid taps."""
    runs: list[Segment] = []
    for a in range(out):
        taps = valid_taps(a, size, k, s, p, d)
        if runs and (runs[-1].tap0, runs[-1].tap1) == taps:
            runs[-1] = runs[-1]._replace(stop=a + 1)
        else:
            runs.append(Segment(a, a + 1, *taps))
    return tuple(runs)


def products(shape: tuple[int, ...], o: int, g: Geometry) -> tuple[int, int]:
    """Multiplications of the forward: (with im2col, skipping the padding)."""
    n, c, h, w = shape
    (kh, kw), (oh, ow) = g.kernel, g.out
    rows = segments(h, kh, g.stride[0], g.padding[0], g.dilation[0], oh)
    cols = segments(w, kw, g.stride[1], g.padding[1], g.dilation[1], ow)
    per_row = sum((r.stop - r.start) * (r.tap1 - r.tap0) for r in rows)
    per_col = sum((q.stop - q.start) * (q.tap1 - q.tap0) for q in cols)
    return n * o * c * oh * ow * kh * kw, n * o * c * per_row * per_col


@functools.lru_cache(maxsize=256)
def skipped_share(h: int, w: int, g: Geometry) -> float:
    """The share of im2col's products that are with padding zeros."""
    full, kept = products((1, 1, h, w), 1, g)
    return 1 - kept / full


def _input_slice(seg: Segment, i: int, s: int, p: int, d: int) -> slice:
    first = seg.start * s + i * d - p
    return slice(first, first + (seg.stop - seg.start - 1) * s + 1, s)


def batch_last(x: np.ndarray, temporary: bool = False) -> np.ndarray:
    """(N, C, H, W) -> a C-contiguous (C, H, W, N) copy: the batch innermost, so that a
    region's rows are long contiguous runs (``rb N`` values) instead of ``rb``.
    ``temporary``: from `scratch`, for the caller to give back."""
    shape = (x.shape[1], x.shape[2], x.shape[3], x.shape[0])
    out = scratch.take(shape, x.dtype) if temporary else np.empty(shape, dtype=x.dtype)
    np.copyto(out, x.transpose(1, 2, 3, 0))
    return out


def region_columns(xt: np.ndarray, g: Geometry,
                   temporary: bool = False) -> list[tuple[Segment, Segment, np.ndarray | None]]:
    """Each region's (row run, column run, columns X_R as (|Ti| |Tj| C, |R| N)), from
    ``xt`` = `batch_last`(x); None for a region whose pixels read only padding.
    ``temporary``: the columns come from `scratch`, and the caller gives them back
    (`give_back`) before it returns. The copies (one per region and tap pair) are
    independent, so `threads.map_chunks` shares them out between the cores (NumPy
    releases the GIL while it copies)."""
    c, h, w, n = xt.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    regions, copies = [], []
    for rows in segments(h, kh, sh, ph, dh, g.out[0]):
        for cols in segments(w, kw, sw, pw, dw, g.out[1]):
            ti, tj = rows.tap1 - rows.tap0, cols.tap1 - cols.tap0
            if ti == 0 or tj == 0:
                regions.append((rows, cols, None))
                continue
            ra, rb = rows.stop - rows.start, cols.stop - cols.start
            shape = (c * ti * tj, ra * rb * n)
            block = scratch.take(shape, xt.dtype) if temporary else np.empty(shape, xt.dtype)
            grid = block.reshape(ti, tj, c, ra, rb, n)  # a view: the taps' slabs
            for ii in range(ti):
                rs = _input_slice(rows, rows.tap0 + ii, sh, ph, dh)
                for jj in range(tj):
                    copies.append((grid[ii, jj], xt[:, rs, _input_slice(cols, cols.tap0 + jj, sw, pw, dw)]))
            regions.append((rows, cols, block))

    def run(chunk: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for target, source in chunk:
            target[...] = source

    if xt.size * kh * kw >= THREADED_MIN_ELEMENTS:
        map_chunks(run, copies)
    else:
        run(copies)
    return regions


# Below this many copied values, the pool's overhead costs more than a second core saves.
THREADED_MIN_ELEMENTS = 1 << 17


def give_back(regions: list) -> None:
    """Return temporary columns (`region_columns(..., temporary=True)`) to `scratch`."""
    for _, _, block in regions:
        if block is not None:
            scratch.give(block)


def regions_forward(xt: np.ndarray, weight: np.ndarray, g: Geometry,
                    keep: bool) -> tuple[np.ndarray, list | None]:
    """$Y = \\sum_R W_{T_R} X_R$ region by region from ``xt`` = `batch_last`(x), as
    (N, O, oH, oW); and the regions' columns when ``keep`` (for dW), else None (then
    they were temporaries)."""
    n = xt.shape[3]
    o, (oh, ow) = weight.shape[0], g.out
    dtype = np.result_type(xt, weight)
    yt = scratch.take((o, oh, ow, n), dtype)  # the output, batch last
    regions = region_columns(xt, g, temporary=not keep)
    # (O, kH, kW, C): a region's weight rows (taps, then channels) are then runs of C
    channels_last = np.ascontiguousarray(weight.transpose(0, 2, 3, 1))
    for rows, cols, block in regions:
        target = yt[:, rows.start:rows.stop, cols.start:cols.stop]
        if block is None:
            target[...] = 0
            continue
        w_r = channels_last[:, rows.tap0:rows.tap1, cols.tap0:cols.tap1].reshape(o, -1)
        product = scratch.take((o, block.shape[1]), dtype)
        np.matmul(w_r, block, out=product)
        target[...] = product.reshape(target.shape)
        scratch.give(product)
    if not keep:
        give_back(regions)
    y = np.empty((n, o, oh, ow), dtype=dtype)
    np.copyto(y, yt.transpose(3, 0, 1, 2))
    scratch.give(yt)
    return y, (regions if keep else None)


def regions_weight_grad(gt: np.ndarray, regions: list, weight_shape: tuple[int, ...],
                        dtype: np.dtype) -> np.ndarray:
    """$\\bar W_{:, :, T_i, T_j} = \\sum_R \\bar Y_R X_R^\\top$, from ``gt`` =
    `batch_last`(dY) and the forward's columns."""
    o, c, kh, kw = weight_shape
    gw = np.zeros((o, kh, kw, c), dtype=dtype)  # taps before channels, as the columns' rows
    for rows, cols, block in regions:
        if block is None:
            continue
        g_view = gt[:, rows.start:rows.stop, cols.start:cols.stop]
        g_r = scratch.take((o, block.shape[1]), gt.dtype)  # (O, |R| N)
        g_r.reshape(g_view.shape)[...] = g_view
        # (K, |R| N) @ (|R| N, O), transposed: OpenBLAS runs this orientation faster
        # than (O, |R| N) @ (|R| N, K) (as im2col's dW in `minibam.backends.conv`)
        gw[:, rows.tap0:rows.tap1, cols.tap0:cols.tap1] += (block @ g_r.T).T.reshape(
            o, rows.tap1 - rows.tap0, cols.tap1 - cols.tap0, c)
        scratch.give(g_r)
    return np.ascontiguousarray(gw.transpose(0, 3, 1, 2))


# When the split pays (measured by `benchmarks/conv_kernels.py` and ``minibam bench
# --suite conv --against``): a large enough share of products with padding zeros, and
# enough channels that each region's product is a real matrix product. Its copies are
# cheaper than im2col's (batch last), but nine smaller products and the layout changes
# cost more than im2col's one batched product; the skipped products repay that from
# about a quarter of them in float32 (BAM's 14 x 14 stage), and earlier in float64,
# where a product costs twice as much against the same copies (its 28 x 28 stage:
# 18 %). Against the flat layout (few channels, little waste, no copies at all:
# `conv_flat`) only when a quarter of the products are zeros (`REGIONS_OVER_FLAT`).
REGIONS_MIN_SKIPPED = {4: 0.25, 8: 0.15}  # by itemsize; others as float32
REGIONS_MIN_CHANNELS = 8
REGIONS_OVER_FLAT = 0.25
STRIDED = True


def regions_pay(channels: int, height: int, width: int, g: Geometry, itemsize: int = 4) -> bool:
    """Whether this path may take a convolution: padding within the kernel's reach (so
    that for stride 1 the input gradient is a convolution of the same kind, run by this
    kernel too), and the thresholds above. `minibam.backends.conv` then prefers the flat
    layout where that is taken, unless ``skipped_share >= REGIONS_OVER_FLAT``."""
    if channels < REGIONS_MIN_CHANNELS or (g.stride != (1, 1) and not STRIDED):
        return False
    if any(p > d * (k - 1) for k, p, d in zip(g.kernel, g.padding, g.dilation, strict=True)):
        return False
    return skipped_share(height, width, g) >= REGIONS_MIN_SKIPPED.get(itemsize, REGIONS_MIN_SKIPPED[4])
