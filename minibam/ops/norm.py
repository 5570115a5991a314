r"""Batch normalisation. Derivations: docs/derivations/batchnorm.md.

Every statistic is per channel: ``x`` of shape (N, C, *spatial) is viewed as (N, C, L)
with L the product of the spatial sizes (1 for (N, C) input), and each channel's
$m = N L$ values are reduced together. Reductions use ``np.einsum``, which sums over
axes 0 and 2 in one pass without the full-size temporary that ``(a * b).sum(...)``
would allocate.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

from minibam.function import Context, Function
from minibam.ops._checks import flag, optional_tensor, require_tensor
from minibam.tensor import Tensor

_OP = "batch_norm"


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """$\\sum_{n,l} a_{ncl}$ for a of shape (N, C, L)."""
    return np.einsum("ncl->c", a)


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """$\\sum_{n,l} a_{ncl} b_{ncl}$ for a, b of shape (N, C, L)."""
    return np.einsum("ncl,ncl->c", a, b)


def _statistic(reduce: Any, m: int, *arrays: np.ndarray) -> np.ndarray:
    """``reduce(*arrays) / m``, accumulated in float64 when float32 would overflow.

    In float32 a sum of squares overflows long before the variance does: values near
    1e19 have squares near 1e38, and a few hundred of them pass float32's 3.4e38, while
    the variance itself still fits. The fast float32 sum is tried first (the common case
    pays one check of C numbers); only a channel that came out inf or nan is redone in
    float64, whose range cannot overflow from float32 data.
    """
    result = reduce(*arrays) / m
    if result.dtype == np.float32 and not np.all(np.isfinite(result)):
        wide = reduce(*(a.astype(np.float64) for a in arrays)) / m
        result = wide.astype(np.float32)  # inf again only if the statistic itself overflows
    return result


def _update_running(running_mean: np.ndarray, running_var: np.ndarray, mean: np.ndarray,
                    unbiased_var: np.ndarray, momentum: float) -> None:
    """$r \\leftarrow (1 - p)\\, r + p\\, s$ for both buffers, in place: the caller's
    buffers are the module's state (as in PyTorch)."""
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean
    running_var *= 1.0 - momentum
    running_var += momentum * unbiased_var


class BatchNorm(Function):
    r"""Per-channel normalisation followed by a per-channel affine map.

    Forward, with $\mu, \sigma^2$ the batch mean and **biased** variance in training
    and the running statistics in evaluation:

    $\hat x = (x - \mu)\,/\sqrt{\sigma^2 + \epsilon}$,  $y = \gamma \hat x + \beta$.

    Training also updates the running statistics in place ("Running statistics"):
    $r_\mu \leftarrow (1 - p)\, r_\mu + p\, \mu$ and
    $r_{\sigma^2} \leftarrow (1 - p)\, r_{\sigma^2} + p\, \sigma^2 \frac{m}{m - 1}$
    (the **unbiased** variance), p the momentum.

    Backward, with $\bar y$ the upstream gradient and each sum over one channel's values:

    $\bar\beta = \sum \bar y$,  $\bar\gamma = \sum \bar y\, \hat x$;
    evaluation ("Evaluation-mode backward"), where $\mu, \sigma$ are constants:
    $\bar x = \gamma \bar y / \sqrt{\sigma^2 + \epsilon}$;
    training ("Training-mode backward"), where $\mu, \sigma$ depend on x:
    $\bar x = \frac{\gamma}{m \sqrt{\sigma^2 + \epsilon}}
    \left(m \bar y - \bar\beta - \hat x\, \bar\gamma\right)$, which is
    $\frac{1}{m}\,\mathrm{inv\_std}\,(m g - \sum g - \hat x \sum g \hat x)$ with
    $g = \gamma \bar y$ and $\mathrm{inv\_std} = 1/\sqrt{\sigma^2 + \epsilon}$.
    """

    @staticmethod
    def forward(
        ctx: Context,
        x: np.ndarray,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        running_mean: np.ndarray | None,
        running_var: np.ndarray | None,
        training: bool,
        momentum: float,
        eps: float,
        dtype: np.dtype,
    ) -> np.ndarray:
        shape = x.shape
        # L spelled out rather than -1: NumPy cannot infer it for an empty batch (N = 0).
        x3 = x.reshape(shape[0], shape[1], math.prod(shape[2:])).astype(dtype, copy=False)
        if training:
            m = x3.shape[0] * x3.shape[2]
            mean = _statistic(_channel_sum, m, x3)
            centred = x3 - mean[:, None]  # the one full-size temporary; becomes y below
            var = _statistic(_channel_dot, m, centred, centred)  # biased: normalises this batch
            if running_mean is not None:
                _update_running(running_mean, running_var, mean, var * (m / (m - 1)), momentum)
        else:
            # Copies: a later training call may update the buffers before this backward.
            mean, var = np.array(running_mean, dtype=dtype), np.array(running_var, dtype=dtype)
            centred = x3 - mean[:, None]
        inv_std = 1.0 / np.sqrt(var + eps)
        scale = inv_std if weight is None else weight.astype(dtype, copy=False) * inv_std
        y = centred
        y *= scale[:, None]
        if bias is not None:
            y += bias.astype(dtype, copy=False)[:, None]
        ctx.training = training
        # x, mean and inv_std are enough to rebuild x_hat in backward: cheaper than
        # keeping a second full-size array alive between the two passes.
        ctx.save_for_backward(x3, mean, inv_std, scale)
        return y.reshape(shape)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        x3, mean, inv_std, scale = ctx.saved
        need_x, need_weight, need_bias = ctx.needs_input_grad
        g3 = grad.reshape(x3.shape)
        centred = d_weight = d_bias = d_x = None
        if need_bias or (need_x and ctx.training):
            d_bias = _channel_sum(g3)
        if need_weight or (need_x and ctx.training):
            # x - mu is rebuilt here; x_hat = centred * inv_std is never formed in full,
            # inv_std is folded into the per-channel factors instead.
            centred = x3 - mean[:, None]
            d_weight = _channel_dot(g3, centred) * inv_std
        if need_x:
            if ctx.training:
                m = x3.shape[0] * x3.shape[2]
                # In the centred buffer: scale * (dy - d_bias/m - x_hat * d_weight/m).
                d_x = centred
                d_x *= (-d_weight * inv_std / m)[:, None]
                d_x += g3
                d_x -= (d_bias / m)[:, None]
                d_x *= scale[:, None]
            else:
                d_x = g3 * scale[:, None]
            d_x = d_x.reshape(grad.shape)
        return d_x, (d_weight if need_weight else None), (d_bias if need_bias else None)


def _buffer(value: Any, name: str, channels: int, x_shape: tuple[int, ...]) -> np.ndarray | None:
    """The array behind a running-statistics buffer (a Tensor or a float ndarray), checked."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        array = value.data
    elif isinstance(value, np.ndarray):
        if value.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"{_OP}: {name} must be float32 or float64 so that it can be updated "
                f"in place, got dtype {value.dtype}"
            )
        array = value
    else:
        raise TypeError(
            f"{_OP}: {name} must be a minibam Tensor (or a float np.ndarray) or None, "
            f"got {type(value).__name__}"
        )
    if array.shape != (channels,):
        raise ValueError(
            f"{_OP}: {name} must have shape ({channels},) for x of shape {x_shape} "
            f"({channels} channels), got {array.shape}"
        )
    return array


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{_OP}: {name} must be a real number, got {value!r}")
    return float(value)


def batch_norm(
    x: Tensor,
    running_mean: Tensor | np.ndarray | None,
    running_var: Tensor | np.ndarray | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation over channel axis 1 of ``x`` (N, C) or (N, C, H, W), as PyTorch.

    Training normalises with the batch statistics and, when buffers are given, updates
    ``running_mean`` / ``running_var`` **in place** (a Tensor's ``.data``, or a float
    ndarray itself) with the unbiased variance. Evaluation normalises with the buffers,
    which are then required. ``weight`` (gamma) and ``bias`` (beta) have shape (C,).
    The result has NumPy's promoted dtype of ``x``, ``weight``, ``bias`` and the
    buffers; the buffers keep theirs.
    """
    require_tensor(x, "x", _OP)
    optional_tensor(weight, "weight", _OP)
    optional_tensor(bias, "bias", _OP)
    if x.ndim < 2:
        raise ValueError(
            f"{_OP}: x must be (N, C) or (N, C, H, W) (at least 2-D), got shape {x.shape}"
        )
    channels = x.shape[1]
    mean_buf = _buffer(running_mean, "running_mean", channels, x.shape)
    var_buf = _buffer(running_var, "running_var", channels, x.shape)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(
                f"{_OP}: {name} must have shape ({channels},) for x of shape {x.shape} "
                f"({channels} channels), got {t.shape}"
            )
    momentum = _real(momentum, "momentum")
    eps = _real(eps, "eps")
    training = flag(training, "training", _OP)
    if (mean_buf is None) != (var_buf is None):
        raise ValueError(
            f"{_OP}: running_mean and running_var must either both be None or neither be None"
        )
    if training:
        values_per_channel = x.data.size // channels if channels else 0
        if values_per_channel <= 1:
            raise ValueError(
                f"{_OP}: Expected more than 1 value per channel when training, got input "
                f"size {x.shape}"
            )
        if not eps > 0:
            raise ValueError(f"{_OP}: eps must be positive during training, got {eps}")
    else:
        if mean_buf is None:
            raise ValueError(
                f"{_OP}: running_mean and running_var must be given in evaluation mode "
                f"(training=False)"
            )
        if not eps >= 0:
            raise ValueError(f"{_OP}: eps must be non-negative, got {eps}")
    operands = [x.data] + [a for a in (mean_buf, var_buf) if a is not None]
    operands += [t.data for t in (weight, bias) if t is not None]
    dtype = np.result_type(*operands)
    return BatchNorm.apply(
        x, weight, bias,
        running_mean=mean_buf, running_var=var_buf,
        training=training, momentum=momentum, eps=eps, dtype=dtype,
    )
