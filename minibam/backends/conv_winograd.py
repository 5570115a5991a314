r"""Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1 and padding = dilation.

Source: A. Lavin and S. Gray, "Fast Algorithms for Convolutional Neural Networks",
CVPR 2016 (arXiv:1509.09308), section 4; the matrices below are theirs.

**Dilation first.** With stride 1, a 3x3 kernel, dilation $d$ and padding $d$, output
row $u$ reads input rows $u - d$, $u$, $u + d$: all in the same residue class
$a = u \bmod d$. So the dilated convolution is an ordinary 3x3 convolution with padding 1
on each of the $d^2$ interleaved sub-grids $x[:, :, a::d, b::d]$, the sub-grids being
extra batch entries. H and W are zero-padded up to whole tiles of every sub-grid (those
rows only ever meet padding anyway) and the output cropped back.

**One axis.** Two outputs of a 3-tap correlation of inputs $z_0 \dots z_3$,
$y_0 = z_0 g_0 + z_1 g_1 + z_2 g_2$ and $y_1 = z_1 g_0 + z_2 g_1 + z_3 g_2$, take four
products instead of six: $y = A^\top m$, $m = (G g) \odot (B^\top z)$, with

$$B^\top = \begin{pmatrix}1&0&-1&0\\0&1&1&0\\0&-1&1&0\\0&1&0&-1\end{pmatrix},\quad
G = \begin{pmatrix}1&0&0\\ \tfrac12&\tfrac12&\tfrac12\\ \tfrac12&-\tfrac12&\tfrac12\\0&0&1\end{pmatrix},\quad
A^\top = \begin{pmatrix}1&1&1&0\\0&1&-1&-1\end{pmatrix}$$

that is $m_1 = (z_0 - z_2) g_0$, $m_2 = (z_1 + z_2) \frac{g_0 + g_1 + g_2}{2}$,
$m_3 = (z_2 - z_1) \frac{g_0 - g_1 + g_2}{2}$, $m_4 = (z_1 - z_3) g_2$, and
$y_0 = m_1 + m_2 + m_3$, $y_1 = m_2 - m_3 - m_4$ (multiply out to check).

**Two axes, many channels.** Nesting the 1-D rule in rows and columns, a 2x2 output tile
from a 4x4 input tile $z$ (tiles at stride 2) is $Y = A^\top [U \odot V] A$ with
$U = G g G^\top$ and $V = B^\top z B$. Summed over input channels $c$, each of the 16
positions $(\xi, \nu)$ of the 4x4 tile is a matrix product over all tiles $p$ at once:

$$M_{\xi\nu} = U_{\xi\nu} V_{\xi\nu}, \quad U_{\xi\nu}: (O, C),\ V_{\xi\nu}: (C, P),$$

16 products of $O C P$ multiplications for $4 P$ outputs: 4 per output and channel pair
instead of 9 (`products`).

**Backward** (each step above is linear, so its adjoint is its transpose): with $\bar Y$
the gradient of a tile, $\bar M = A \bar Y A^\top$; then from $M = U V$,
$\bar U_{\xi\nu} = \bar M_{\xi\nu} V_{\xi\nu}^\top$ and $\bar V_{\xi\nu} = U_{\xi\nu}^\top
\bar M_{\xi\nu}$; from $U = G g G^\top$, $\bar g = G^\top \bar U G$; from $V = B^\top z B$,
$\bar z = B \bar V B^\top$, added into the input where the tile was read (neighbouring
tiles overlap by two rows and columns, so their gradients add up there). The sub-grids
are then woven back together and the padding cut off. $\bar b = \sum \bar Y$ is the
caller's, as on every path.

The transforms are sums of strided slices of whole arrays (`_combine`): one NumPy pass
per term, no loop over tiles.

Not one of `FastConv2d`'s paths: measured slower than the paths it takes for every one
of BAM's dilated convolutions, as each NumPy pass of the transforms costs more than the
products it saves (docs/fast-kernels.md, "Winograd F(2 × 2, 3 × 3) on the sub-grids: built,
measured, not taken", counts both; ``benchmarks/conv_kernels.py`` times it). Tested against the plain op in
tests/test_backends_winograd.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from minibam.backends import scratch

if TYPE_CHECKING:
    from minibam.ops.conv import Geometry  # noqa: F401 - for the annotations only

# Lavin & Gray's F(2, 3) matrices (module docstring): B^T and A^T have entries 0 and
# +-1 only, so their transforms are additions and subtractions (`_combine`).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def covers(g: Geometry) -> bool:
    """Whether this module computes a convolution of geometry ``g``: 3x3, stride 1,
    padding = dilation (each axis its own)."""
    return g.kernel == (3, 3) and g.stride == (1, 1) and g.padding == g.dilation


class Tiling:
    """Where the tiles lie for an (H, W) map. Per axis: the dilation d, the sub-grid's
    size s = ceil(H / d) and its number of 2-wide tiles t = ceil(s / 2), the map padded
    to 2 t d rows.

    Layout of every tiled array: (channels, tile row, tile column, N, row residue,
    column residue), the residues a = row % d and b = column % d naming the sub-grid.
    With the tile position outermost, the slices the transforms take (every second tile
    row or column) are runs of N d^2 contiguous values, not of one; and all axes but
    the first are P, the columns of the 16 matrix products."""

    def __init__(self, h: int, w: int, g: Geometry) -> None:
        if not covers(g):
            raise ValueError(
                f"conv_winograd: only 3x3 kernels with stride 1 and padding = dilation, got "
                f"kernel_size {g.kernel}, stride {g.stride}, padding {g.padding}, dilation {g.dilation}")
        self.h, self.w = h, w
        self.dh, self.dw = g.dilation
        self.sh, self.sw = _ceil_div(h, self.dh), _ceil_div(w, self.dw)
        self.th, self.tw = _ceil_div(self.sh, 2), _ceil_div(self.sw, 2)

    def tiles(self, n: int) -> int:
        """P: tiles of all sub-grids of all samples."""
        return self.th * self.tw * n * self.dh * self.dw

    def tile_shape(self, n: int) -> tuple[int, ...]:
        """P's axes: (tile rows, tile columns, N, row residue, column residue)."""
        return self.th, self.tw, n, self.dh, self.dw

    def split(self, x: np.ndarray, out: np.ndarray) -> None:
        """Write (N, C, H, W) ``x`` into ``out`` (C, rows >= sh, columns >= sw, N, dh, dw):
        x[n, c, i d + a, j d + b] at out[c, i, j, n, a, b], and zeros where no x is."""
        n, c = x.shape[:2]
        out[:, self.sh:] = 0
        out[:, :self.sh, self.sw:] = 0
        if x.shape[2:] != (self.sh * self.dh, self.sw * self.dw):  # pad to whole sub-grids
            padded = scratch.take((n, c, self.sh * self.dh, self.sw * self.dw), x.dtype)
            padded[:, :, self.h:] = 0
            padded[:, :, :self.h, self.w:] = 0
            padded[:, :, :self.h, :self.w] = x
            self.split(padded, out)
            scratch.give(padded)
            return
        grids = x.reshape(n, c, self.sh, self.dh, self.sw, self.dw)
        out[:, :self.sh, :self.sw] = grids.transpose(1, 2, 4, 0, 3, 5)

    def join(self, parts: np.ndarray, n: int, c: int) -> np.ndarray:
        """The inverse of `split`: (C, sh', sw', N, dh, dw) -> a fresh (N, C, H, W), cropped."""
        rows, cols = parts.shape[1] * self.dh, parts.shape[2] * self.dw
        woven = parts.transpose(3, 0, 1, 4, 2, 5)  # (N, C, sub-grid row, a, sub-grid column, b)
        if (rows, cols) == (self.h, self.w):
            out = np.empty((n, c, self.h, self.w), parts.dtype)
            out.reshape(woven.shape)[...] = woven
            return out
        full = scratch.take((n, c, rows, cols), parts.dtype)
        full.reshape(woven.shape)[...] = woven
        out = np.ascontiguousarray(full[:, :, :self.h, :self.w])
        scratch.give(full)
        return out


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def products(shape: tuple[int, ...], o: int, g: Geometry) -> int:
    """Multiplications of the forward: 16 products (O, C) @ (C, P). dW and dx take as many."""
    n, c, h, w = shape
    return 16 * o * c * Tiling(h, w, g).tiles(n)


def _combine(row: np.ndarray, terms: list[np.ndarray], out: np.ndarray) -> np.ndarray:
    """out = sum_k row[k] terms[k], for coefficients 0, 1, -1 (those of A and B):
    one NumPy pass per term after the first two, no multiplication."""
    plus = [t for c, t in zip(row, terms, strict=True) if c == 1]
    minus = [t for c, t in zip(row, terms, strict=True) if c == -1]
    if not plus:
        np.negative(minus.pop(0), out=out)
    elif len(plus) >= 2:
        np.add(plus.pop(0), plus.pop(0), out=out)
    elif minus:
        np.subtract(plus.pop(0), minus.pop(0), out=out)
    else:
        np.copyto(out, plus.pop(0))
    for t in plus:
        np.add(out, t, out=out)
    for t in minus:
        np.subtract(out, t, out=out)
    return out


def weight_transform(weight: np.ndarray) -> np.ndarray:
    """U = G g G^T for every (out, in) channel pair, as 16 matrices (O, C): (16, O, C)."""
    o, c = weight.shape[:2]
    gm = G.astype(weight.dtype)
    return np.ascontiguousarray((gm @ weight @ gm.T).transpose(2, 3, 0, 1)).reshape(16, o, c)


def input_transform(x: np.ndarray, t: Tiling, out: np.ndarray | None = None) -> np.ndarray:
    """V = B^T d B for every 4x4 input tile of every sub-grid: (16, C, P) (into ``out``)."""
    n, c = x.shape[:2]
    th, tw = t.th, t.tw
    # The sub-grids with one row and column of zeros around (padding 1), and up to 2 t + 2.
    z = scratch.take((c, 2 * th + 2, 2 * tw + 2, n, t.dh, t.dw), x.dtype)
    z[:, 0] = 0
    z[:, 1:, 0] = 0
    t.split(x, z[:, 1:, 1:])
    # Rows: R_xi = sum_k B^T[xi, k] z[tile row 2i + k]; offset k is the slice k::2.
    rows = scratch.take((4, c, th, 2 * tw + 2, n, t.dh, t.dw), x.dtype)
    z_rows = [z[:, k:k + 2 * th:2] for k in range(4)]
    for xi in range(4):
        _combine(BT[xi], z_rows, rows[xi])
    scratch.give(z)
    # Columns: V_{xi nu} = sum_j B^T[nu, j] R_xi[tile column 2s + j].
    v = np.empty((16, c, t.tiles(n)), x.dtype) if out is None else out
    grid = v.reshape(4, 4, c, *t.tile_shape(n))
    for xi in range(4):
        cols = [rows[xi][:, :, j:j + 2 * tw:2] for j in range(4)]
        for nu in range(4):
            _combine(BT[nu], cols, grid[xi, nu])
    scratch.give(rows)
    return v


def winograd_forward(x: np.ndarray, weight: np.ndarray, g: Geometry,
                     keep: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """y = conv2d(x, weight) as (N, O, H, W), and V (for dW) when ``keep``, else None
    (then V was a temporary)."""
    n, _, h, w = x.shape
    o = weight.shape[0]
    t = Tiling(h, w, g)
    dtype = np.result_type(x, weight)
    p = t.tiles(n)
    v = input_transform(x.astype(dtype, copy=False), t,
                        out=None if keep else scratch.take((16, x.shape[1], p), dtype))
    m = scratch.take((16, o, p), dtype)
    np.matmul(weight_transform(weight.astype(dtype, copy=False)), v, out=m)
    y = _output_transform(m, t, n, o, dtype)
    scratch.give(m)
    if not keep:
        scratch.give(v)
        v = None
    return y, v


def _output_transform(m: np.ndarray, t: Tiling, n: int, o: int, dtype: np.dtype) -> np.ndarray:
    """Y = A^T M A per tile, then woven back into (N, O, H, W): output (2 i + e) d + a is
    row e of tile row i of the sub-grid of residue a."""
    grid = m.reshape(4, 4, o, *t.tile_shape(n))
    half = scratch.take((4, 2, o, *t.tile_shape(n)), dtype)  # M A: columns done
    for xi in range(4):
        for f in range(2):
            _combine(AT[f], list(grid[xi]), half[xi, f])
    # (O, tile row, e, tile column, f, N, a, b): the tiles' rows and columns in map order
    y_tiles = scratch.take((o, t.th, 2, t.tw, 2, n, t.dh, t.dw), dtype)
    for e in range(2):
        for f in range(2):
            _combine(AT[e], list(half[:, f]), y_tiles[:, :, e, :, f])
    scratch.give(half)
    y = t.join(y_tiles.reshape(o, 2 * t.th, 2 * t.tw, n, t.dh, t.dw), n, o)
    scratch.give(y_tiles)
    return y


def winograd_backward(grad: np.ndarray, saved: np.ndarray, weight: np.ndarray, x_shape: tuple[int, ...],
                      g: Geometry, kept: bool, need_x: bool,
                      need_w: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(dx, dW) from dY; ``saved`` is V when ``kept``, else x (V is then rebuilt into a
    temporary)."""
    n, c, h, w = x_shape
    o = weight.shape[0]
    t = Tiling(h, w, g)
    dtype = np.result_type(grad, weight)
    p = t.tiles(n)
    dm = _gradient_transform(grad.astype(dtype, copy=False), t)
    gx = gw = None
    if need_w:
        v = saved if kept else input_transform(saved.astype(dtype, copy=False), t,
                                                out=scratch.take((16, c, p), dtype))
        du = np.matmul(dm, v.transpose(0, 2, 1))  # (16, O, C)
        if not kept:
            scratch.give(v)
        gm = G.astype(dtype)
        gw = gm.T @ du.reshape(4, 4, o, c).transpose(2, 3, 0, 1) @ gm  # G^T dU G: (O, C, 3, 3)
    if need_x:
        dv = scratch.take((16, c, p), dtype)
        np.matmul(weight_transform(weight.astype(dtype, copy=False)).transpose(0, 2, 1), dm, out=dv)
        gx = _input_grad(dv, t, n, c)
        scratch.give(dv)
    scratch.give(dm)
    return gx, gw


def _gradient_transform(grad: np.ndarray, t: Tiling) -> np.ndarray:
    """dM = A dY A^T per tile: (16, O, P), a temporary (the caller gives it back)."""
    n, o = grad.shape[:2]
    # dY in the tiles' layout; rows and columns past the map had no output: gradient 0.
    gt = scratch.take((o, 2 * t.th, 2 * t.tw, n, t.dh, t.dw), grad.dtype)
    t.split(grad, gt)
    tiles = gt.reshape(o, t.th, 2, t.tw, 2, n, t.dh, t.dw)
    # Columns first: S[e, nu] = sum_f A[nu, f] dY[e, f], with A = (A^T)^T.
    s = scratch.take((2, 4, o, *t.tile_shape(n)), grad.dtype)
    for e in range(2):
        dy_row = [tiles[:, :, e, :, f] for f in range(2)]
        for nu in range(4):
            _combine(AT[:, nu], dy_row, s[e, nu])
    scratch.give(gt)
    dm = scratch.take((16, o, t.tiles(n)), grad.dtype)
    grid = dm.reshape(4, 4, o, *t.tile_shape(n))
    for xi in range(4):
        for nu in range(4):
            _combine(AT[:, xi], [s[0, nu], s[1, nu]], grid[xi, nu])
    scratch.give(s)
    return dm


def _input_grad(dv: np.ndarray, t: Tiling, n: int, c: int) -> np.ndarray:
    """dx from dV: z-bar = B dV B^T per tile, added where each tile was read, the sub-grids
    woven back and the padding cut off."""
    th, tw = t.th, t.tw
    grid = dv.reshape(4, 4, c, *t.tile_shape(n))
    term = scratch.take((c, *t.tile_shape(n)), dv.dtype)
    # Columns: dR_xi[tile column 2s + j] += sum_nu B[j, nu] dV_{xi nu}. Offsets j = 0, 1
    # write columns 0 .. 2 tw - 1 exactly once (assigned); j = 2, 3 overlap them (added).
    rows = scratch.take((4, c, th, 2 * tw + 2, n, t.dh, t.dw), dv.dtype)
    for xi in range(4):
        rows[xi][:, :, 2 * tw:] = 0
        for j in range(4):
            target = rows[xi][:, :, j:j + 2 * tw:2]
            if j < 2:
                _combine(BT[:, j], list(grid[xi]), target)
            else:
                target += _combine(BT[:, j], list(grid[xi]), term)
    scratch.give(term)
    # Rows, the same way: dz[tile row 2i + k] += sum_xi B[k, xi] dR_xi.
    dz = scratch.take((c, 2 * th + 2, 2 * tw + 2, n, t.dh, t.dw), dv.dtype)
    dz[:, 2 * th:] = 0
    term = scratch.take((c, th, 2 * tw + 2, n, t.dh, t.dw), dv.dtype)
    for k in range(4):
        target = dz[:, k:k + 2 * th:2]
        if k < 2:
            _combine(BT[:, k], list(rows), target)
        else:
            target += _combine(BT[:, k], list(rows), term)
    scratch.give(term)
    scratch.give(rows)
    gx = t.join(dz[:, 1:1 + t.sh, 1:1 + t.sw], n, c)  # the padding ring cut off
    scratch.give(dz)
    return gx
