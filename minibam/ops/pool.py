"""Global average pooling: (N, C, H, W) -> (N, C). Derivation: docs/derivations/pool.md."""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import require_ndim, require_tensor
from minibam.tensor import Tensor


class GlobalAvgPool2d(Function):
    r"""$y_{nc} = \frac{1}{HW} \sum_{h,w} x_{nchw}$;  $\bar x_{nchw} = \bar y_{nc} / (HW)$.

    A true mean over the whole H x W plane, whatever its shape (BAM's reference code
    pools only an H x H window when W != H). See docs/derivations/pool.md,
    "Global average pooling".
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.shape = x.shape
        return x.mean(axis=(2, 3))

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        n, c, h, w = ctx.shape
        # An int divisor keeps float32 grads float32.
        return (np.broadcast_to((grad / (h * w))[:, :, None, None], ctx.shape),)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """Mean over H and W of an (N, C, H, W) tensor, giving (N, C)."""
    require_tensor(x, "x", "global_avg_pool2d")
    require_ndim(x, (4,), "x", "global_avg_pool2d", "(N, C, H, W)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(
            f"global_avg_pool2d: cannot average over an empty H x W plane, got shape {x.shape}"
        )
    return GlobalAvgPool2d.apply(x)
