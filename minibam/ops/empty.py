"""An op on an empty batch (N = 0), for the ops whose kernels assume N >= 1.

PyTorch accepts N = 0 in convolutions and gives an empty output and zero gradients for
the weights (a sum over no samples). ``EmptyBatch`` does exactly that for any op: the
output is an empty array of the right shape and every input's gradient is zero, so the
fast paths never meet a size-0 reshape.
"""

from __future__ import annotations

import numpy as np

from minibam.function import Context, Function


class EmptyBatch(Function):
    r"""$y$ is empty (shape ``out_shape``); $\bar a = 0$ for every input $a$."""

    @staticmethod
    def forward(ctx: Context, *inputs: np.ndarray | None, out_shape: tuple, dtype: np.dtype) -> np.ndarray:
        ctx.shapes = [None if a is None else (a.shape, a.dtype) for a in inputs]
        return np.zeros(out_shape, dtype=dtype)

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray) -> tuple:
        return tuple(None if s is None else np.zeros(*s) for s in ctx.shapes)
