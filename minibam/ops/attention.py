"""BAM's last step as one op: ``y = x * (1 + sigmoid(M_c (+ or *) M_s))``.

Written as a single Function (instead of five elementwise ops) because it runs on
full (N, C, H, W) tensors: one op keeps one attention-sized array (the sigmoid's
output) alive for backward instead of five, and reuses it for its derivative.
Derivation: docs/derivations/bam.md, "Combining the branches".
"""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import require_tensor
from minibam.ops.activation import stable_sigmoid
from minibam.tensor import Tensor

COMBINE = ("sum", "product")


class BamCombine(Function):
    r"""Forward, with $M_c$ (N, C, 1, 1) and $M_s$ (N, 1, H, W) broadcast to (N, C, H, W):

    $a = M_c + M_s$ ("sum", the paper) or $a = M_c M_s$ ("product", the authors' code),
    $s = \sigma(a)$,  $y = x (1 + s)$.

    Backward, with $\bar a = \bar y\, x\, s (1 - s)$ (the sigmoid's derivative):

    $\bar x = \bar y (1 + s)$;
    sum: $\bar M_c = \sum_{h,w} \bar a$, $\bar M_s = \sum_c \bar a$;
    product: $\bar M_c = \sum_{h,w} \bar a M_s$, $\bar M_s = \sum_c \bar a M_c$
    (each map's gradient sums over the axes it was broadcast along).

    Derivation: docs/derivations/bam.md, "Combining the branches". The fast path
    (``minibam.backends.combine``) computes the same in cache-sized blocks on all cores.
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, mc: np.ndarray, ms: np.ndarray, combine: str) -> np.ndarray:
        a = mc + ms if combine == "sum" else mc * ms
        s = stable_sigmoid(a)
        ctx.save_for_backward(x, mc, ms, s)
        ctx.combine = combine
        return x * (1 + s)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        x, mc, ms, s = ctx.saved
        x_bar = grad * (1 + s)
        a_bar = grad * x * s * (1 - s)
        if ctx.combine == "sum":
            mc_bar = a_bar.sum(axis=(2, 3), keepdims=True)
            ms_bar = a_bar.sum(axis=1, keepdims=True)
        else:
            mc_bar = (a_bar * ms).sum(axis=(2, 3), keepdims=True)
            ms_bar = (a_bar * mc).sum(axis=1, keepdims=True)
        return x_bar, mc_bar, ms_bar


def bam_combine(x: Tensor, channel_map: Tensor, spatial_map: Tensor, combine: str = "sum") -> Tensor:
    """``x * (1 + sigmoid(channel_map (+|*) spatial_map))`` with the maps broadcast.

    ``x`` (N, C, H, W); ``channel_map`` (N, C, 1, 1); ``spatial_map`` (N, 1, H, W).
    """
    require_tensor(x, "x", "bam_combine")
    require_tensor(channel_map, "channel_map", "bam_combine")
    require_tensor(spatial_map, "spatial_map", "bam_combine")
    if not isinstance(combine, str) or combine not in COMBINE:
        raise ValueError(f"bam_combine: combine must be one of {COMBINE}, got {combine!r}")
    if x.ndim != 4:
        raise ValueError(f"bam_combine: x must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if channel_map.shape != (n, c, 1, 1) or spatial_map.shape != (n, 1, h, w):
        raise ValueError(
            f"bam_combine: for x of shape {x.shape} the channel map must be {(n, c, 1, 1)} and "
            f"the spatial map {(n, 1, h, w)}; got {channel_map.shape} and {spatial_map.shape}"
        )
    return BamCombine.apply(x, channel_map, spatial_map, combine=combine)
