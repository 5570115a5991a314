"""BAM's last step, fast: ``minibam.ops.attention.BamCombine`` in cache-sized blocks on all cores.

It implements the same derivation as the plain op, whose forward and backward are five
lines each (docs/derivations/bam.md, "Combining the branches"). What it adds is explained
in docs/performance.md ("Cache-sized blocks", "Threads over cache-sized blocks", "The
sigmoid of a sum", "Sums over a block as matrix-vector products"). In short:

- blocks: the work is cut into (sample, channel slice) blocks of about
  ``BLOCK_ELEMENTS`` values, so every temporary stays in the CPU cache instead of being
  a full (N, C, H, W) array; the blocks are independent, so `threads.map_chunks` shares
  them out between the cores;
- the factorised sigmoid of a sum: $e^{-(M_c + M_s)} = e^{-M_c} e^{-M_s}$, so the
  exps are those of the two small maps, none per element (see `factorises`);
- the sums over (H, W) and over C as matrix-vector products (BLAS's gemv) on each
  block viewed as (channels, H W).

Tested against the plain op in tests/test_backends.py (tolerance stated there).
"""

from __future__ import annotations

import numpy as np

from minibam.backends.threads import blocks, map_chunks
from minibam.function import Context
from minibam.ops.activation import sigmoid_from_exp, sigmoid_of_negated
from minibam.ops.attention import BamCombine


class FastBamCombine(BamCombine):
    """`BamCombine`, blocked and threaded; the same ``ctx`` fields, so either backward
    can follow either forward."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, mc: np.ndarray, ms: np.ndarray, combine: str) -> np.ndarray:
        n, c, h, w = x.shape
        dtype = np.result_type(x, mc, ms)
        s, y = np.empty(x.shape, dtype), np.empty(x.shape, dtype)
        if combine == "sum" and factorises(mc, ms, dtype):
            # e^{-a} = e^{-M_c} e^{-M_s}: the exps of the two small maps, none per element
            u, v = np.exp(np.negative(mc, dtype=dtype)), np.exp(np.negative(ms, dtype=dtype))

            def sigmoid(i: int, cs: slice, out: np.ndarray) -> None:
                sigmoid_from_exp(np.multiply(u[i, cs], v[i], out=out))
        else:
            neg_mc = -mc  # -a from the negated small map: the negation costs nothing at full size
            negated_a = np.subtract if combine == "sum" else np.multiply

            def sigmoid(i: int, cs: slice, out: np.ndarray) -> None:
                sigmoid_of_negated(negated_a(neg_mc[i, cs], ms[i], out=out))

        def run(chunk: list[tuple[int, slice]]) -> None:
            for i, cs in chunk:
                s_i, y_i = s[i, cs], y[i, cs]
                sigmoid(i, cs, s_i)  # s = sigma(a)
                np.multiply(x[i, cs], s_i, out=y_i)
                y_i += x[i, cs]  # y = x (1 + s)

        map_chunks(run, _blocks(n, c, h * w))
        ctx.save_for_backward(x, mc, ms, s)
        ctx.combine = combine
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        x, mc, ms, s = ctx.saved
        need_x, need_mc, need_ms = ctx.needs_input_grad
        n, c, h, w = x.shape
        dtype = np.result_type(grad, s)
        dx = np.empty(x.shape, dtype) if need_x else None
        dmc = np.empty((n, c, 1, 1), dtype) if need_mc else None
        parts = _blocks(n, c, h * w)
        ones_hw, ones_c = np.ones(h * w, dtype), np.ones(c, dtype)

        def run(chunk: list[tuple[int, slice]]) -> np.ndarray | None:
            # This run's own share of dL/dM_s: runs may hold channels of the same sample.
            dms = np.zeros((n, 1, h, w), dtype) if need_ms else None
            dms_rows = dms.reshape(n, h * w) if need_ms else None  # a view: each sample's map as one row
            if not chunk:
                return dms
            size = max(s[i, cs].size for i, cs in chunk)
            p_buf, q_buf = np.empty(size, dtype), np.empty(size, dtype)  # reused per block
            for i, cs in chunk:
                g, s_i, x_i = grad[i, cs], s[i, cs], x[i, cs]
                p = p_buf[:s_i.size].reshape(s_i.shape)
                np.multiply(g, s_i, out=p)  # ybar s
                if need_x:
                    np.add(p, g, out=dx[i, cs])  # xbar = ybar (1 + s)
                if not (need_mc or need_ms):
                    continue
                q = q_buf[:s_i.size].reshape(s_i.shape)
                np.multiply(p, x_i, out=p)  # ybar x s
                np.multiply(p, s_i, out=q)
                np.subtract(p, q, out=p)  # abar = ybar x s (1 - s)
                # The sums as matrix-vector products on the block viewed as (channels, H W):
                # BLAS's gemv runs them 2-3x faster than ndarray.sum over an axis.
                p2 = p.reshape(len(p), -1)
                if need_mc:  # sum over h, w (of abar, or of abar M_s)
                    np.matmul(p2, ones_hw if ctx.combine == "sum" else ms[i, 0].reshape(-1), out=dmc[i, cs, 0, 0])
                if need_ms:  # sum over this block's channels (of abar, or of abar M_c)
                    dms_rows[i] += (ones_c[: len(p)] if ctx.combine == "sum" else mc[i, cs, 0, 0]) @ p2
            return dms

        shares = map_chunks(run, parts)
        dms = None
        if need_ms:
            dms = shares[0]
            for share in shares[1:]:
                dms += share
        return dx, dmc, dms


# Values per block, read at call time (a test shrinks it to force many blocks): small
# enough that a block's temporaries stay in the CPU cache (64 Ki float32 values are
# 256 KiB), large enough that NumPy's per-call overhead is small.
BLOCK_ELEMENTS = 1 << 16


def factorises(mc: np.ndarray, ms: np.ndarray, dtype: np.dtype) -> bool:
    r"""Whether $e^{-(M_c + M_s)}$ may be computed as $e^{-M_c} e^{-M_s}$ in ``dtype``.

    Each factor and their product must stay finite: $|M| \le L$ with $e^{2L}$ below the
    dtype's largest number. The product's relative error is then that of the two exps
    (NumPy's ``exp`` is accurate to a few units of round-off, not correctly rounded)
    plus one rounding, whatever the size of a; the plain op's $e^{-\mathrm{fl}(M_c + M_s)}$
    carries instead the rounding of the sum, amplified by |a|: it is the more accurate
    of the two for small |a|, the less for large |a|. tests/test_backends.py measures
    both over a million values of BAM's range and holds this path to a stated bound.
    Batch-normalised maps are usually far below L, but not always (eval mode on large
    inputs): a map beyond L, or not finite, takes the one-exp-per-element route, whose
    limits at $\pm\infty$ are exact.
    """
    limit = np.log(np.finfo(dtype).max) / 2 - 1
    return bool(np.all(np.abs(mc) <= limit) and np.all(np.abs(ms) <= limit))


def _blocks(n: int, c: int, plane: int) -> list[tuple[int, slice]]:
    """(sample, channel slice) blocks of about ``BLOCK_ELEMENTS`` values each.

    Working block by block keeps every temporary in the CPU cache instead of making it
    a full (N, C, H, W) array (docs/performance.md has the measured gain).
    The blocks are independent, so `map_chunks` shares them out between threads.
    """
    return blocks(n, c, plane, BLOCK_ELEMENTS)


