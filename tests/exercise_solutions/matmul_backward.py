import numpy as np


def matmul_backward(grad, a, b):
    # docs/derivations/linear.md: A_bar = Y_bar B^T, B_bar = A^T Y_bar, batch axes summed back.
    def sum_to(g, shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape))))
        return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1),
                     keepdims=True)

    grad_a = grad @ np.swapaxes(b, -1, -2)
    grad_b = np.swapaxes(a, -1, -2) @ grad
    return sum_to(grad_a, a.shape), sum_to(grad_b, b.shape)
