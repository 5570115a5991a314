import numpy as np

from minibam.function import Function


def _sum_to(grad, shape):
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra)))
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1),
                    keepdims=True)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        y = a / b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -y/b
        a, b, y = ctx.saved
        return np.asarray(_sum_to(grad / b, a.shape)), np.asarray(_sum_to(-grad * y / b, b.shape))
