"""Pooling: summaries of a feature map over its H x W plane or over its channels.

Over the plane, (N, C, H, W) -> (N, C): the average (BAM, CBAM), the maximum, the
L^p norm ("lp") and the log-sum-exp ("lse") of CBAM's channel gate. Over the channels,
(N, C, H, W) -> (N, 1, H, W): the maximum and the mean of CBAM's spatial gate, and
both at once as CBAM's (N, 2, H, W) "compress" step. Derivations:
docs/derivations/pool.md (average) and docs/derivations/cbam.md (the rest).
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import require_ndim, require_tensor
from minibam.tensor import Tensor

# --------------------------------------------------------------------------------------
# Over the H x W plane: (N, C, H, W) -> (N, C)
# --------------------------------------------------------------------------------------


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


def _max_forward(ctx: Context, x: np.ndarray, axis: int) -> np.ndarray:
    """Max along ``axis`` (kept, size 1); remembers which element won for the backward."""
    # argmax picks the first maximum (and the first NaN), as PyTorch's max pooling does.
    ctx.winner = np.expand_dims(np.argmax(x, axis=axis), axis)
    ctx.axis = axis
    return np.take_along_axis(x, ctx.winner, axis=axis)


def _max_backward(ctx: Context, grad: np.ndarray, shape: tuple) -> np.ndarray:
    """The whole upstream gradient goes to the winning element; the others get zero."""
    dx = np.zeros(shape, dtype=grad.dtype)
    np.put_along_axis(dx, ctx.winner, grad, axis=ctx.axis)
    return dx


class GlobalMaxPool2d(Function):
    r"""$y_{nc} = \max_{h,w} x_{nchw} = x_{nc h^* w^*}$;
    $\bar x_{nchw} = \bar y_{nc}\,[(h, w) = (h^*, w^*)]$.

    $(h^*, w^*)$ is the first maximal position in row-major order, the one PyTorch's
    ``max_pool2d`` picks: at a tie the whole gradient goes to that one element. See
    docs/derivations/cbam.md, "Max pooling".
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        n, c, h, w = ctx.shape = x.shape
        return _max_forward(ctx, x.reshape(n, c, h * w), axis=2)[:, :, 0]

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        n, c, h, w = ctx.shape
        return (_max_backward(ctx, grad[:, :, None], (n, c, h * w)).reshape(ctx.shape),)


class GlobalLpPool2d(Function):
    r"""$y_{nc} = \big(\sum_{h,w} x_{nchw}^\nu\big)^{1/\nu}$;
    $\bar x_{nchw} = \bar y_{nc}\, x_{nchw}^{\nu-1}\, y_{nc}^{1-\nu}$ (for $\nu = 2$: $\bar y\, x / y$).

    PyTorch's ``lp_pool2d`` with the whole plane as its window; $\nu$ is ``norm_type``
    (CBAM's "lp": 2). Where $y = 0$ and $\nu > 1$ the gradient is taken as 0, as
    PyTorch's is. See
    docs/derivations/cbam.md, "Lp pooling".
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray, p: float) -> np.ndarray:
        y = (x**p).sum(axis=(2, 3)) ** (1 / p)  # a negative power sum gives NaN, as in PyTorch
        ctx.save_for_backward(x, y)
        ctx.p = p
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        x, y = ctx.saved
        p = ctx.p
        if p == 1:
            return (np.broadcast_to(grad[:, :, None, None], x.shape),)  # y = sum x
        zero = y == 0
        # y^(1-p), with 0 where y = 0: no x can raise y there, and PyTorch gives 0 too
        scale = np.where(zero, 0, grad / np.where(zero, 1, y) ** (p - 1))
        return (scale[:, :, None, None] * x ** (p - 1),)


class GlobalLsePool2d(Function):
    r"""$y_{nc} = \log \sum_{h,w} e^{x_{nchw}} = x^*_{nc} + \log \sum_{h,w} e^{x_{nchw} - x^*_{nc}}$,
    $x^*_{nc} = \max_{h,w} x_{nchw}$;  $\bar x_{nchw} = \bar y_{nc}\, e^{x_{nchw} - y_{nc}}$
    (the softmax over the plane).

    Subtracting the maximum keeps every exponent at most 0, so nothing overflows (CBAM's
    "lse"). See docs/derivations/cbam.md, "Log-sum-exp pooling".
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        m = x.max(axis=(2, 3), keepdims=True)
        y = (m + np.log(np.exp(x - m).sum(axis=(2, 3), keepdims=True)))[:, :, 0, 0]
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        x, y = ctx.saved
        return (grad[:, :, None, None] * np.exp(x - y[:, :, None, None]),)


def _check_plane(x: Tensor, op: str) -> None:
    require_tensor(x, "x", op)
    require_ndim(x, (4,), "x", op, "(N, C, H, W)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{op}: cannot pool over an empty H x W plane, got shape {x.shape}")


def global_avg_pool2d(x: Tensor) -> Tensor:
    """Mean over H and W of an (N, C, H, W) tensor, giving (N, C)."""
    _check_plane(x, "global_avg_pool2d")
    return GlobalAvgPool2d.apply(x)


def global_max_pool2d(x: Tensor) -> Tensor:
    """Maximum over H and W of an (N, C, H, W) tensor, giving (N, C); the gradient goes to
    the first maximal element of each plane."""
    _check_plane(x, "global_max_pool2d")
    return GlobalMaxPool2d.apply(x)


def global_lp_pool2d(x: Tensor, norm_type: float = 2) -> Tensor:
    """``(sum over H, W of x**norm_type) ** (1/norm_type)``, giving (N, C); PyTorch's
    ``lp_pool2d(x, norm_type, (H, W))`` flattened. A negative power sum (odd or
    fractional ``norm_type``) gives NaN, as in PyTorch."""
    _check_plane(x, "global_lp_pool2d")
    if isinstance(norm_type, bool) or not isinstance(norm_type, Real) or not norm_type > 0:
        raise ValueError(f"global_lp_pool2d: norm_type must be a positive number, got {norm_type!r}")
    return GlobalLpPool2d.apply(x, p=float(norm_type))


def global_lse_pool2d(x: Tensor) -> Tensor:
    """``log(sum over H, W of exp(x))`` of an (N, C, H, W) tensor, giving (N, C),
    computed without overflow."""
    _check_plane(x, "global_lse_pool2d")
    return GlobalLsePool2d.apply(x)


# --------------------------------------------------------------------------------------
# Over the channels: (N, C, H, W) -> (N, 1, H, W)
# --------------------------------------------------------------------------------------


class ChannelMaxPool(Function):
    r"""$y_{n1hw} = \max_c x_{nchw} = x_{n c^* hw}$;  $\bar x_{nchw} = \bar y_{n1hw} [c = c^*]$.

    $c^*$ is the first maximal channel of each pixel, as ``torch.max(x, 1)`` picks. See
    docs/derivations/cbam.md, "Max pooling".
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.shape = x.shape
        return _max_forward(ctx, x, axis=1)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (_max_backward(ctx, grad, ctx.shape),)


class ChannelAvgPool(Function):
    r"""$y_{n1hw} = \frac1C \sum_c x_{nchw}$;  $\bar x_{nchw} = \bar y_{n1hw} / C$."""

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.shape = x.shape
        return x.mean(axis=1, keepdims=True)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return (np.broadcast_to(grad / ctx.shape[1], ctx.shape),)


class ChannelPool(Function):
    r"""CBAM's compress step: $y_{n0hw} = \max_c x_{nchw}$, $y_{n1hw} = \frac1C \sum_c x_{nchw}$
    (max first, then mean, the released code's order), (N, C, H, W) -> (N, 2, H, W).

    $\bar x_{nchw} = \bar y_{n0hw} [c = c^*_{nhw}] + \bar y_{n1hw} / C$: the two backward
    passes above, added. See docs/derivations/cbam.md, "The spatial gate".
    """

    @staticmethod
    def forward(ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.shape = x.shape
        return np.concatenate([_max_forward(ctx, x, axis=1), x.mean(axis=1, keepdims=True)], axis=1)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        dx = _max_backward(ctx, grad[:, :1], ctx.shape)
        dx += grad[:, 1:] / ctx.shape[1]
        return (dx,)


def _check_channels(x: Tensor, op: str) -> None:
    require_tensor(x, "x", op)
    require_ndim(x, (4,), "x", op, "(N, C, H, W)")
    if x.shape[1] == 0:
        raise ValueError(f"{op}: cannot pool over zero channels, got shape {x.shape}")


def channel_max_pool(x: Tensor) -> Tensor:
    """Maximum over the channels of (N, C, H, W), giving (N, 1, H, W); the gradient goes to
    the first maximal channel of each pixel."""
    _check_channels(x, "channel_max_pool")
    return ChannelMaxPool.apply(x)


def channel_avg_pool(x: Tensor) -> Tensor:
    """Mean over the channels of (N, C, H, W), giving (N, 1, H, W)."""
    _check_channels(x, "channel_avg_pool")
    return ChannelAvgPool.apply(x)


def channel_pool(x: Tensor) -> Tensor:
    """``[channel_max_pool(x), channel_avg_pool(x)]`` stacked on axis 1: (N, 2, H, W)."""
    _check_channels(x, "channel_pool")
    return ChannelPool.apply(x)
