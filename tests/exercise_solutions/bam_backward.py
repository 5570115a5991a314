import numpy as np


def bam_backward(dy, cache):
    # docs/derivations/bam.md, "The whole backward in order", from the cache of
    # minibam.manual.bam_forward (training mode).
    F, M, M_c, M_s = cache["F"], cache["M"], cache["M_c"], cache["M_s"]
    layers, paper = cache["layers"], cache["variant"] == "paper"
    grads = {}

    def linear(d, name):  # z = x W^T + b
        c = layers[name]
        grads[name + ".weight"] = d.T @ c["x"]
        grads[name + ".bias"] = d.sum(axis=0)
        return d @ c["w"]

    def batch_norm(d, name):  # training mode, per channel over c["axes"]
        c = layers[name]
        if "relu_open" in c:
            d = np.where(c["relu_open"], d, 0.0)
        axes, x_hat = c["axes"], c["x_hat"]
        grads[name + ".weight"] = (d * x_hat).sum(axis=axes)
        grads[name + ".bias"] = d.sum(axis=axes)
        g = d * c["gamma"]
        return c["inv_std"] * (g - g.mean(axis=axes, keepdims=True)
                               - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))

    def conv(d, name):  # stride 1, square kernel k, padding p, dilation r
        c = layers[name]
        w, cols = c["w"], c["cols"]
        n, o = d.shape[:2]
        d2 = d.reshape(n, o, -1)
        grads[name + ".weight"] = np.einsum("nol,nkl->ok", d2, cols).reshape(w.shape)
        grads[name + ".bias"] = d2.sum(axis=(0, 2))
        dcols = np.einsum("ok,nol->nkl", w.reshape(o, -1), d2)
        N, C, H, W = c["x_shape"]
        k, p, r = w.shape[2], c["padding"], c["dilation"]
        oh, ow = H + 2 * p - r * (k - 1), W + 2 * p - r * (k - 1)
        dcols = dcols.reshape(N, C, k, k, oh, ow)
        out = np.zeros((N, C, H + 2 * p, W + 2 * p))
        for i in range(k):
            for j in range(k):
                out[:, :, i * r:i * r + oh, j * r:j * r + ow] += dcols[:, :, i, j]
        return out[:, :, p:p + H, p:p + W]

    dF = dy * (1 + M)
    ds = dy * F * M * (1 - M)
    if paper:
        dM_c, dM_s = ds.sum(axis=(2, 3)), ds.sum(axis=1, keepdims=True)
    else:
        dM_c = (ds * M_s).sum(axis=(2, 3))
        dM_s = (ds * M_c[:, :, None, None]).sum(axis=1, keepdims=True)

    s = "spatial_att.gate_s."
    d = batch_norm(dM_s, s + "gate_s_bn_final") if paper else dM_s
    d = conv(d, s + "gate_s_conv_final")
    for i in reversed(range(cache["n_dilated"])):
        d = conv(batch_norm(d, s + f"gate_s_bn_di_{i}"), s + f"gate_s_conv_di_{i}")
    dF = dF + conv(batch_norm(d, s + "gate_s_bn_reduce0"), s + "gate_s_conv_reduce0")

    c = "channel_att.gate_c."
    d = batch_norm(dM_c, c + "gate_c_bn_final") if paper else dM_c
    d = linear(batch_norm(linear(d, c + "gate_c_fc_final"), c + "gate_c_bn_1"), c + "gate_c_fc_0")
    H, W = F.shape[2:]
    dF = dF + d[:, :, None, None] / (H * W)
    return {"x": dF, **{name: grads[name] for name in cache["param_names"]}}
