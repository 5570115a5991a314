import numpy as np


def bam_combine_backward(grad, x, mc, ms, combine):
    # docs/derivations/bam.md, "Combining the branches"
    a = mc + ms if combine == "sum" else mc * ms
    z = np.exp(-np.abs(a))
    s = np.where(a >= 0, 1 / (1 + z), z / (1 + z))
    grad_x = grad * (1 + s)
    grad_a = grad * x * s * (1 - s)
    if combine == "sum":
        return grad_x, grad_a.sum(axis=(2, 3), keepdims=True), grad_a.sum(axis=1, keepdims=True)
    return (grad_x, (grad_a * ms).sum(axis=(2, 3), keepdims=True),
            (grad_a * mc).sum(axis=1, keepdims=True))
