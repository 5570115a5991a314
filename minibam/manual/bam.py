r"""The whole BAM forward and backward pass by hand, in plain NumPy (cs231n style).

    y, cache = bam_forward(x, params, variant="paper", training=True, dilation_val=4, eps=1e-5)
    grads = bam_backward(dy, cache)      # {"x": dL/dx, "<parameter name>": dL/dparameter, ...}

No autograd and no minibam import: one page holds every derivative of the Bottleneck
Attention Module (Park et al., 2018), in the paper's symbols, which are those of the
site-wide symbol table (docs/symbols.md). ``params`` uses the
``BAM.state_dict()`` names (``layout.py``), so a checkpoint of ``minibam.nn.BAM`` (or of
the authors' PyTorch code) can be fed in unchanged. The layers used below are in
``layers.py``; the argument checks are kept apart in ``_validate.py``.
Derivations: docs/derivations/bam.md.

Symbols (paper, section 3; r is the reduction ratio, d the dilation, D the number of
dilated convolutions). Linear layers work on rows, as in PyTorch: x (N, in), W (out, in),
z = x W^T + b, so dL/dW = dL/dz^T x = sum_n dL/dz_n x_n^T (docs/derivations/linear.md).

    F        (N, C, H, W)    input feature map (x)
    F_c      (N, C)          AvgPool(F), the true mean over H and W
    z0, h0   (N, C/r)        z0 = F_c W0^T + b0,  h0 = ReLU(BN(z0))
    z1       (N, C)          z1 = h0 W1^T + b1
    M_c      (N, C)          channel attention: BN(z1) (paper) or z1 (official)
    u0, g0   (N, C/r, H, W)  u0 = f0^{1x1}(F),  g0 = ReLU(BN(u0))
    u_i, g_i (N, C/r, H, W)  u_i = f_i^{3x3, dilation d}(g_{i-1}),  g_i = ReLU(BN(u_i)), i = 1..D
                             (layers gate_s_conv_di_{i-1} and gate_s_bn_di_{i-1})
    u_f      (N, 1, H, W)    u_f = f_final^{1x1}(g_D)
    M_s      (N, 1, H, W)    spatial attention: BN(u_f) (paper) or u_f (official)
    a        (N, C, H, W)    the logits M_c + M_s (paper) or M_c * M_s (official), both broadcast
    M        (N, C, H, W)    M = sigmoid(a), the attention map M(F)
    y        (N, C, H, W)    F' = F + F * M = F * (1 + M)

Batch norm follows PyTorch: training normalises with the biased batch variance and
tracks the unbiased one with momentum 0.1 (the new batch gets weight 0.1); eval uses
the running statistics. The caller's arrays are never written to: the buffers after the
pass come back as new arrays in ``cache["running"]``.
"""

import numpy as np

from minibam.manual._validate import check_bam_inputs, real_array
from minibam.manual.layers import (
    bn_backward,
    bn_forward,
    bn_relu_backward,
    bn_relu_forward,
    conv_backward,
    conv_forward,
    linear_backward,
    linear_forward,
    sigmoid,
)
from minibam.manual.layout import (
    BN_1,
    BN_C_FINAL,
    BN_REDUCE,
    BN_S_FINAL,
    CONV_FINAL,
    CONV_REDUCE,
    FC_0,
    FC_FINAL,
    bam_param_names,
    bn_di,
    conv_di,
)

# --------------------------------------------------------------------------------------
# The whole module
# --------------------------------------------------------------------------------------


# inf and nan come back as values, never as warnings, as in PyTorch and the rest of
# minibam (docs/guarantees.md, "Warnings: none for inf and nan").
@np.errstate(all="ignore")
def bam_forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    variant: str = "paper",
    training: bool = True,
    dilation_val: int = 4,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict]:
    """BAM forward: x (N, C, H, W) -> y (N, C, H, W), and the cache for [`bam_backward`][minibam.manual.bam.bam_backward].

    ``params`` maps ``BAM.state_dict()`` names to arrays (``num_batches_tracked`` may be
    left out); the number D of dilated convolutions is read from its keys. Nothing in
    ``params`` or ``x`` is modified.

    Keys of the returned cache a reader may want (the rest is for the backward pass):
      ``"M_c"`` (N, C), ``"M_s"`` (N, 1, H, W), ``"M"`` (N, C, H, W): the attention maps;
      ``"running"``: every BN buffer after this pass, under its state_dict name. In
      training these are the updated statistics (momentum 0.1, unbiased variance,
      ``num_batches_tracked + 1``); in eval, copies of the given ones.
      ``params.update(cache["running"])`` does what PyTorch does in place.
    """
    F, n_dilated = check_bam_inputs(x, params, variant, training, dilation_val, eps)
    layers: dict[str, dict] = {}  # one small cache per layer, by layer name
    running: dict[str, np.ndarray] = {}
    paper = variant == "paper"

    # ---- channel branch: M_c = BN(ReLU(BN(AvgPool(F) W0^T + b0)) W1^T + b1) ---------
    F_c = F.mean(axis=(2, 3))  # a true global average: any H, W
    z0, layers[FC_0] = linear_forward(F_c, params, FC_0)
    h0, layers[BN_1] = bn_relu_forward(z0, params, BN_1, training, eps, running)
    z1, layers[FC_FINAL] = linear_forward(h0, params, FC_FINAL)
    if paper:
        M_c, layers[BN_C_FINAL] = bn_forward(z1, params, BN_C_FINAL, training, eps, running)
    else:
        M_c = z1

    # ---- spatial branch: M_s = BN(f_final(g_D)), g_i = ReLU(BN(f_i(g_{i-1}))) --------
    # (u and g are overwritten layer by layer: each layer's cache keeps what it needs)
    u0, layers[CONV_REDUCE] = conv_forward(F, params, CONV_REDUCE, padding=0, dilation=1)
    g, layers[BN_REDUCE] = bn_relu_forward(u0, params, BN_REDUCE, training, eps, running)
    for i in range(n_dilated):
        u, layers[conv_di(i)] = conv_forward(
            g, params, conv_di(i), padding=dilation_val, dilation=dilation_val
        )
        g, layers[bn_di(i)] = bn_relu_forward(u, params, bn_di(i), training, eps, running)
    u_f, layers[CONV_FINAL] = conv_forward(g, params, CONV_FINAL, padding=0, dilation=1)
    if paper:
        M_s, layers[BN_S_FINAL] = bn_forward(u_f, params, BN_S_FINAL, training, eps, running)
    else:
        M_s = u_f

    # ---- combine: M = sigmoid(M_c (+ or *) M_s), y = F * (1 + M) ----------------------
    M_c4 = M_c[:, :, None, None]  # (N, C, 1, 1) against M_s (N, 1, H, W)
    a = M_c4 + M_s if paper else M_c4 * M_s
    M = sigmoid(a)
    y = F * (1 + M)

    cache = {
        "variant": variant, "n_dilated": n_dilated, "F": F, "M_c": M_c, "M_s": M_s, "M": M,
        "layers": layers, "running": running, "param_names": bam_param_names(n_dilated, variant),
    }
    return y, cache


_CACHE_KEYS = {"variant", "n_dilated", "F", "M_c", "M_s", "M", "layers", "running", "param_names"}


@np.errstate(all="ignore")
def bam_backward(dy: np.ndarray, cache: dict) -> dict[str, np.ndarray]:
    """BAM backward: dL/dy (N, C, H, W) -> {"x": dL/dx, and dL/dp for every parameter p}.

    Parameters are the weights and biases (not the BN buffers), under their
    ``BAM.state_dict()`` names, in state_dict order after ``"x"``.
    """
    if not isinstance(cache, dict) or not _CACHE_KEYS <= cache.keys():
        raise TypeError(
            f"bam_backward: cache must be the dict returned by bam_forward, got "
            f"{type(cache).__name__}"
        )
    F, M, M_c, M_s = cache["F"], cache["M"], cache["M_c"], cache["M_s"]
    layers, n_dilated, paper = cache["layers"], cache["n_dilated"], cache["variant"] == "paper"
    dy = real_array(dy, "dy", "bam_backward")
    if dy.shape != F.shape:
        raise ValueError(f"bam_backward: dy has shape {dy.shape}, expected y's shape {F.shape}")
    grads: dict[str, np.ndarray] = {}

    # y = F * (1 + M):  dL/dF (direct path) = dy * (1 + M),  dL/dM = dy * F
    dF = dy * (1 + M)
    dM = dy * F
    # M = sigmoid(a):  dL/da = dL/dM * M * (1 - M)
    da = dM * M * (1 - M)
    if paper:
        # a = M_c + M_s broadcast:  dL/dM_c = sum_{h,w} dL/da,  dL/dM_s = sum_c dL/da
        dM_c = da.sum(axis=(2, 3))
        dM_s = da.sum(axis=1, keepdims=True)
    else:
        # a = M_c * M_s broadcast:  dL/dM_c = sum_{h,w} dL/da * M_s,  dL/dM_s = sum_c dL/da * M_c
        dM_c = (da * M_s).sum(axis=(2, 3))
        dM_s = (da * M_c[:, :, None, None]).sum(axis=1, keepdims=True)

    # ---- spatial branch, last layer first -------------------------------------------
    # M_s = BN(u_f) (paper):  dL/du_f = lambda (dx_hat - mean dx_hat - x_hat mean(dx_hat x_hat)),
    # lambda = inv_std = (v + eps)^(-1/2), dx_hat = gamma dL/dM_s, means over n, h, w
    # (training; eval: lambda dx_hat)
    du_f = bn_backward(dM_s, layers[BN_S_FINAL], grads) if paper else dM_s
    # u_f = f_final(g_D), 1x1:  dL/dg_D = W_final^T dL/du_f at every pixel (col2im is a reshape),
    # dL/dW_final = sum over n and pixels of dL/du_f g_D^T
    dg = conv_backward(du_f, layers[CONV_FINAL], grads)
    for i in reversed(range(n_dilated)):  # layer i holds f_{i+1}: u_{i+1} = f_{i+1}(g_i)
        # g_{i+1} = ReLU(BN(u_{i+1})):  dL/du_{i+1} = BN'(dL/dg_{i+1} * [BN(u_{i+1}) > 0])
        du = bn_relu_backward(dg, layers[bn_di(i)], grads)
        # u_{i+1} = f_{i+1}(g_i), a dilated 3x3 convolution:  dL/dg_i = col2im(W^T dL/du_{i+1})
        dg = conv_backward(du, layers[conv_di(i)], grads)
    # g0 = ReLU(BN(u0)):  dL/du0 = BN'(dL/dg0 * [BN(u0) > 0])
    du0 = bn_relu_backward(dg, layers[BN_REDUCE], grads)
    # u0 = f0(F), 1x1:  the spatial branch's share of dL/dF
    dF += conv_backward(du0, layers[CONV_REDUCE], grads)

    # ---- channel branch, last layer first -------------------------------------------
    # M_c = BN(z1) (paper): the same batch-norm backward, means over the batch axis only
    dz1 = bn_backward(dM_c, layers[BN_C_FINAL], grads) if paper else dM_c
    # z1 = h0 W1^T + b1 (rows):  dL/dh0 = dL/dz1 W1,  dL/dW1 = dL/dz1^T h0,  dL/db1 = sum_n dL/dz1
    dh0 = linear_backward(dz1, layers[FC_FINAL], grads)
    # h0 = ReLU(BN(z0)):  dL/dz0 = BN'(dL/dh0 * [BN(z0) > 0])
    dz0 = bn_relu_backward(dh0, layers[BN_1], grads)
    # z0 = F_c W0^T + b0:  dL/dF_c = dL/dz0 W0,  dL/dW0 = dL/dz0^T F_c
    dF_c = linear_backward(dz0, layers[FC_0], grads)
    # F_c = mean_{h,w} F:  every pixel gets dL/dF_c / (H W)
    H, W = F.shape[2:]
    dF += dF_c[:, :, None, None] / (H * W)

    return {"x": dF, **{name: grads[name] for name in cache["param_names"]}}
