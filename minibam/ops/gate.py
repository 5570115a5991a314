"""Gating: ``y = x * g`` with a small gate ``g`` broadcast over a feature map, as CBAM
applies its channel map (N, C, 1, 1) and its spatial map (N, 1, H, W).

One op instead of the generic broadcasting product, because the generic backward
materialises ``grad * x`` at full size and then sums it down to the gate's shape; here
that sum is one ``einsum`` that never builds the full-size product. Derivation:
docs/derivations/cbam.md, "In parallel or in sequence".
"""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import require_tensor
from minibam.tensor import Tensor


class Gate(Function):
    r"""$y_{nchw} = x_{nchw}\, g_{n c' h' w'}$, with $g$ (N, C, 1, 1) or (N, 1, H, W) broadcast;

    $\bar x = \bar y \odot g$ (broadcast), and $\bar g$ the sum of $\bar y \odot x$ over the
    broadcast axes: $\bar g_{nc} = \sum_{h,w} \bar y_{nchw} x_{nchw}$ (channel gate) or
    $\bar g_{nhw} = \sum_c \bar y_{nchw} x_{nchw}$ (spatial gate).
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x, g)
        return x * g

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        x, g = ctx.saved
        need_x, need_g = ctx.needs_input_grad
        n, c, h, w = x.shape
        dx = grad * g if need_x else None
        dg = None
        if need_g:
            dtype = np.result_type(grad, x)
            if g.shape == (n, c, 1, 1):  # channel gate: sum over each plane
                dg = np.einsum("ij,ij->i", grad.reshape(n * c, h * w), x.reshape(n * c, h * w),
                               dtype=dtype)
            else:  # spatial gate: sum over the channels, pixel by pixel
                dg = np.einsum("nci,nci->ni", grad.reshape(n, c, h * w), x.reshape(n, c, h * w),
                               dtype=dtype)
            dg = dg.reshape(g.shape)
        return dx, dg


def gate(x: Tensor, g: Tensor) -> Tensor:
    """``x * g`` for ``x`` (N, C, H, W) and a gate ``g`` of shape (N, C, 1, 1) or (N, 1, H, W)."""
    require_tensor(x, "x", "gate")
    require_tensor(g, "g", "gate")
    if x.ndim != 4:
        raise ValueError(f"gate: x must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if g.shape not in ((n, c, 1, 1), (n, 1, h, w)):
        raise ValueError(
            f"gate: for x of shape {x.shape} the gate must be a channel gate {(n, c, 1, 1)} or "
            f"a spatial gate {(n, 1, h, w)}, got {g.shape}"
        )
    return Gate.apply(x, g)
