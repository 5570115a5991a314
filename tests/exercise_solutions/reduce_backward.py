import numpy as np


def reduce_backward(grad, shape, axis, keepdims, op):
    # docs/derivations/reductions.md: the backward of a sum is a broadcast; a mean divides by n.
    ndim = len(shape)
    if axis is None:
        axes = tuple(range(ndim))
    elif isinstance(axis, int):
        axes = (axis % ndim,)
    else:
        axes = tuple(a % ndim for a in axis)
    if not keepdims:
        grad = np.expand_dims(grad, axes)
    if op == "mean":
        grad = grad / np.prod([shape[a] for a in axes])
    return np.broadcast_to(grad, shape).copy()
