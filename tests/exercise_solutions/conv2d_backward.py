import numpy as np

from minibam.functional import col2im, im2col


def conv2d_backward(grad, x, weight, stride, padding, dilation):
    # docs/derivations/conv.md, "Backward": W_bar = sum_n Y_bar_n X_n^T, b_bar = sum of Y_bar,
    # x_bar = col2im(W^T Y_bar).
    o = weight.shape[0]
    kernel = weight.shape[2:]
    cols = im2col(x, kernel, stride, padding, dilation)  # (N, C kH kW, L)
    g = grad.reshape(grad.shape[0], o, -1)  # (N, O, L)
    grad_weight = np.einsum("nol,nkl->ok", g, cols).reshape(weight.shape)
    grad_bias = g.sum(axis=(0, 2))
    dcols = np.einsum("ok,nol->nkl", weight.reshape(o, -1), g)
    grad_x = col2im(dcols, x.shape, kernel, stride, padding, dilation)
    return grad_x, grad_weight, grad_bias
