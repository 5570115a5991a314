import numpy as np


def global_max_pool2d_backward(grad, x):
    # docs/derivations/cbam.md, "Max pooling": the whole of grad[n, c] goes to the first
    # maximal element of plane (n, c); every other element gets 0
    n, c, h, w = x.shape
    dx = np.zeros(x.shape)
    first = x.reshape(n, c, h * w).argmax(axis=2)
    rows, cols = np.divmod(first, w)
    for i in range(n):
        for j in range(c):
            dx[i, j, rows[i, j], cols[i, j]] = grad[i, j]
    return dx
