import numpy as np


def unbroadcast(grad, shape):
    # docs/derivations/elementwise.md, "Broadcasting": sum over the added leading axes,
    # then over the stretched axes keeping them.
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return np.asarray(grad.sum(axis=stretched, keepdims=True))
