import numpy as np

from minibam.function import Function


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        # Split by sign so that only exp(-|x|) <= 1 is ever computed: no overflow at all.
        z = np.exp(-np.abs(x))
        s = np.where(x >= 0, 1 / (1 + z), z / (1 + z))
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved
        return (grad * s * (1 - s),)
