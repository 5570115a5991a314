import numpy as np


def cbam_channel_gate_backward(grad, x, w0, b0, w1, b1):
    # docs/derivations/cbam.md, "The channel gate: one MLP for every pool"
    n, c, h, w = x.shape
    avg = x.mean(axis=(2, 3))
    first = x.reshape(n, c, h * w).argmax(axis=2)
    mx = x.reshape(n, c, h * w).max(axis=2)
    z_avg, z_max = avg @ w0.T + b0, mx @ w0.T + b0
    a = np.maximum(z_avg, 0) @ w1.T + b1 + np.maximum(z_max, 0) @ w1.T + b1
    m = 1 / (1 + np.exp(-a))
    grad_x = grad * m[:, :, None, None]                     # y = x * M_c, direct path
    grad_a = (grad * x).sum(axis=(2, 3)) * m * (1 - m)      # through M_c and the sigmoid
    grad_w0, grad_b0 = np.zeros_like(w0), np.zeros_like(b0)
    grad_w1, grad_b1 = np.zeros_like(w1), np.zeros_like(b1)
    grad_p = {}
    for name, p, z in (("avg", avg, z_avg), ("max", mx, z_max)):
        grad_w1 += grad_a.T @ np.maximum(z, 0)              # every use of the MLP adds up
        grad_b1 += grad_a.sum(axis=0)
        grad_z = (grad_a @ w1) * (z > 0)
        grad_w0 += grad_z.T @ p
        grad_b0 += grad_z.sum(axis=0)
        grad_p[name] = grad_z @ w0
    grad_x = grad_x + grad_p["avg"][:, :, None, None] / (h * w)
    rows, cols = np.divmod(first, w)
    for i in range(n):
        for j in range(c):
            grad_x[i, j, rows[i, j], cols[i, j]] += grad_p["max"][i, j]
    return grad_x, grad_w0, grad_b0, grad_w1, grad_b1
