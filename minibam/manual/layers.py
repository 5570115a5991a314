"""The building blocks of ``minibam.manual``, in plain NumPy: linear, convolution (via
im2col), batch norm, batch norm + ReLU, and the sigmoid, each as a forward that returns
``(out, cache)`` and a backward that takes ``(d_out, cache, grads)``. BAM (``bam.py``) and
CBAM (``cbam.py``) are written with them. Derivations: docs/derivations/linear.md,
docs/derivations/conv.md, docs/derivations/batchnorm.md, docs/derivations/activations.md.
"""

from __future__ import annotations

import numpy as np

MOMENTUM = 0.1  # PyTorch's BatchNorm default, used by every BN in BAM


# --------------------------------------------------------------------------------------
# Building blocks: each forward returns (out, cache); each backward takes (d_out, cache,
# grads), writes dL/dweight and dL/dbias into grads under the layer's names and returns
# dL/d_in.
# --------------------------------------------------------------------------------------


def linear_forward(x: np.ndarray, params: dict, name: str) -> tuple[np.ndarray, dict]:
    """y = x W^T + b, x (N, in), W (out, in)."""
    w, b = np.asarray(params[f"{name}.weight"]), np.asarray(params[f"{name}.bias"])
    return x @ w.T + b, {"name": name, "x": x, "w": w}


def linear_backward(dy: np.ndarray, c: dict, grads: dict) -> np.ndarray:
    """Rows, as PyTorch (y = x W^T + b):  dx = dy W,  dW = dy^T x = sum_n dy_n x_n^T,  db = sum_n dy."""
    grads[f"{c['name']}.weight"] = dy.T @ c["x"]
    grads[f"{c['name']}.bias"] = dy.sum(axis=0)
    return dy @ c["w"]


def im2col(x: np.ndarray, k: int, padding: int, dilation: int) -> np.ndarray:
    """(N, C, H, W) -> cols (N, C*k*k, H_out*W_out), stride 1.

    Column (c, i, j) holds the input pixel under kernel tap (i, j) of channel c for every
    output position: the padded input shifted by (i*dilation, j*dilation).
    """
    N, C, H, W = x.shape
    H_out, W_out = H + 2 * padding - dilation * (k - 1), W + 2 * padding - dilation * (k - 1)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((N, C, k, k, H_out, W_out), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            top, left = i * dilation, j * dilation
            cols[:, :, i, j] = xp[:, :, top : top + H_out, left : left + W_out]
    return cols.reshape(N, C * k * k, H_out * W_out)


def col2im(dcols: np.ndarray, x_shape: tuple, k: int, padding: int, dilation: int) -> np.ndarray:
    """The adjoint of `im2col`: add each tap's columns back where they were read."""
    N, C, H, W = x_shape
    H_out, W_out = H + 2 * padding - dilation * (k - 1), W + 2 * padding - dilation * (k - 1)
    dcols = dcols.reshape(N, C, k, k, H_out, W_out)
    dxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            top, left = i * dilation, j * dilation
            dxp[:, :, top : top + H_out, left : left + W_out] += dcols[:, :, i, j]
    return dxp[:, :, padding : padding + H, padding : padding + W]


def conv_forward(
    x: np.ndarray, params: dict, name: str, padding: int, dilation: int
) -> tuple[np.ndarray, dict]:
    """Stride-1 convolution as one matrix product: y[n] = W (O, C k k) @ cols[n] + b.

    A layer without a ``.bias`` entry in ``params`` has no bias (CBAM's spatial conv).
    """
    w = np.asarray(params[f"{name}.weight"])
    out_channels, k = w.shape[0], w.shape[2]
    cols = im2col(x, k, padding, dilation)
    y = w.reshape(out_channels, -1) @ cols
    has_bias = f"{name}.bias" in params
    if has_bias:
        y += np.asarray(params[f"{name}.bias"])[:, None]
    H_out = x.shape[2] + 2 * padding - dilation * (k - 1)
    W_out = x.shape[3] + 2 * padding - dilation * (k - 1)
    cache = {"name": name, "cols": cols, "w": w, "x_shape": x.shape,
             "padding": padding, "dilation": dilation, "has_bias": has_bias}
    # Sizes spelled out rather than -1: NumPy cannot infer one for an empty batch.
    return y.reshape(x.shape[0], out_channels, H_out, W_out), cache


def conv_backward(dy: np.ndarray, c: dict, grads: dict) -> np.ndarray:
    """dW = sum_n dy[n] cols[n]^T,  db = sum_{n,h,w} dy,  dx = col2im(W^T dy[n])."""
    w = c["w"]
    dy2 = dy.reshape(dy.shape[0], dy.shape[1], dy.shape[2] * dy.shape[3])  # (N, O, H_out W_out)
    dw = np.tensordot(dy2, c["cols"], axes=([0, 2], [0, 2]))  # sum over n and positions
    grads[f"{c['name']}.weight"] = dw.reshape(w.shape)
    if c["has_bias"]:
        grads[f"{c['name']}.bias"] = dy2.sum(axis=(0, 2))
    dcols = w.reshape(w.shape[0], -1).T @ dy2
    return col2im(dcols, c["x_shape"], w.shape[2], c["padding"], c["dilation"])


def bn_forward(
    x: np.ndarray, params: dict, name: str, training: bool, eps: float, running: dict,
    momentum: float = MOMENTUM,
) -> tuple[np.ndarray, dict]:
    """Batch norm over axis 1 of (N, C) or (N, C, H, W): y = gamma x_hat + beta.

    Training: x_hat = (x - mu) / sqrt(var + eps) with the batch mean and biased variance
    over the m = N (H W) values of each channel; the new running buffers (the new batch
    weighted by ``momentum``) go into ``running``. Eval: the running mean and variance
    take the place of mu and var.
    """
    axes = (0, *range(2, x.ndim))
    per_channel = (1, -1) + (1,) * (x.ndim - 2)  # broadcast a (C,) vector against x
    gamma = np.asarray(params[f"{name}.weight"]).reshape(per_channel)
    beta = np.asarray(params[f"{name}.bias"]).reshape(per_channel)
    running_mean = np.asarray(params[f"{name}.running_mean"])
    running_var = np.asarray(params[f"{name}.running_var"])
    tracked = np.asarray(params.get(f"{name}.num_batches_tracked", 0))
    if training:
        m = x.size // x.shape[1]
        mu, var = x.mean(axis=axes), x.var(axis=axes)
        running[f"{name}.running_mean"] = (1 - momentum) * running_mean + momentum * mu
        running[f"{name}.running_var"] = (1 - momentum) * running_var + momentum * var * m / (m - 1)
        running[f"{name}.num_batches_tracked"] = tracked + 1
    else:
        mu, var = running_mean, running_var
        running[f"{name}.running_mean"] = running_mean.copy()
        running[f"{name}.running_var"] = running_var.copy()
        running[f"{name}.num_batches_tracked"] = tracked.copy()
    inv_std = (1 / np.sqrt(var + eps)).reshape(per_channel)
    x_hat = (x - mu.reshape(per_channel)) * inv_std
    cache = {"name": name, "x_hat": x_hat, "inv_std": inv_std, "gamma": gamma,
             "axes": axes, "training": training}
    return gamma * x_hat + beta, cache


def bn_backward(dy: np.ndarray, c: dict, grads: dict) -> np.ndarray:
    """dgamma = sum dy x_hat,  dbeta = sum dy (over every axis but the channel's).

    With dx_hat = dy gamma and inv_std = lambda = (v + eps)^(-1/2), training (mu and v
    depend on x):  dx = inv_std (dx_hat - mean(dx_hat) - x_hat mean(dx_hat x_hat));
    eval (mu and v are constants): dx = inv_std dx_hat.
    """
    x_hat, inv_std, axes = c["x_hat"], c["inv_std"], c["axes"]
    grads[f"{c['name']}.weight"] = (dy * x_hat).sum(axis=axes)
    grads[f"{c['name']}.bias"] = dy.sum(axis=axes)
    dx_hat = dy * c["gamma"]
    if not c["training"]:
        return inv_std * dx_hat
    mean_dx_hat = dx_hat.mean(axis=axes, keepdims=True)
    mean_dx_hat_x_hat = (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    return inv_std * (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat)


def bn_relu_forward(
    x: np.ndarray, params: dict, name: str, training: bool, eps: float, running: dict
) -> tuple[np.ndarray, dict]:
    """g = ReLU(BN(x)), the block that follows every inner linear and conv layer of BAM."""
    b, cache = bn_forward(x, params, name, training, eps, running)
    cache["relu_open"] = b > 0
    return np.maximum(b, 0), cache


def bn_relu_backward(dg: np.ndarray, c: dict, grads: dict) -> np.ndarray:
    """ReLU passes the gradient where its input was positive (0 at 0, as PyTorch)."""
    return bn_backward(np.where(c["relu_open"], dg, 0), c, grads)


def sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + e^{-a}) from e^{-|a|} only, so that no exponent overflows."""
    z = np.exp(-np.abs(a))
    return np.where(a >= 0, 1, z) / (1 + z)
