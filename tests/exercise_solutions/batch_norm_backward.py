import numpy as np


def batch_norm_backward(grad, x, gamma, eps):
    # docs/derivations/batchnorm.md, "Training-mode backward":
    # x_bar = gamma s (y_bar - beta_bar/m - x_hat gamma_bar/m)
    axes = (0, *range(2, x.ndim))
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes, keepdims=True)
    s = 1 / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    x_hat = (x - mu) * s
    grad_beta = grad.sum(axis=axes)
    grad_gamma = (grad * x_hat).sum(axis=axes)
    grad_x = gamma.reshape(per_channel) * s * (
        grad - grad_beta.reshape(per_channel) / m - x_hat * grad_gamma.reshape(per_channel) / m)
    return grad_x, grad_gamma, grad_beta
