r"""The whole CBAM forward and backward pass by hand, in plain NumPy (cs231n style).

    y, cache = cbam_forward(x, params, pool_types=("avg", "max"), no_spatial=False, training=True)
    grads = cbam_backward(dy, cache)     # {"x": dL/dx, "<parameter name>": dL/dparameter, ...}

No autograd: the layer helpers are those BAM uses too (manual/layers.py). ``params`` uses the
``CBAM.state_dict()`` names, which are those of the authors' released code.
Derivations: docs/derivations/cbam.md.

Symbols (Woo et al., ECCV 2018, section 3, and docs/symbols.md, "CBAM"; P is the set of
pools, r the reduction ratio; linear layers work on rows, z = x W^T + b):

    F          (N, C, H, W)   input feature map (x)
    F_c        (|P| N, C)     the pooled descriptors pool_k(F), stacked: one MLP serves them all
    z0, h0     (|P| N, C/r)   z0 = F_c W0^T + b0,  h0 = ReLU(z0)
    z1         (|P| N, C)     z1 = h0 W1^T + b1
    l_c, M_c   (N, C)         channel logits sum_k z1_k;  channel attention M_c = sigmoid(l_c)
    F1         (N, C, H, W)   F' = F * M_c
    Q          (N, 2, H, W)   [max_c F1; mean_c F1]
    u, l_s     (N, 1, H, W)   u = f^{7x7}(Q) (no bias),  l_s = BN(u) (momentum 0.01)
    M_s        (N, 1, H, W)   spatial attention sigmoid(l_s)
    y          (N, C, H, W)   F'' = F1 * M_s
"""

from collections.abc import Sequence

import numpy as np

from minibam.manual._validate import check_cbam_inputs, real_array
from minibam.manual.layers import (
    bn_backward,
    bn_forward,
    conv_backward,
    conv_forward,
    linear_backward,
    linear_forward,
    sigmoid,
)
from minibam.manual.layout import CBAM_BN as BN
from minibam.manual.layout import CBAM_CONV as CONV
from minibam.manual.layout import CBAM_FC_0 as FC_0
from minibam.manual.layout import CBAM_FC_1 as FC_1

BN_MOMENTUM = 0.01  # the released code's, for its one batch norm


# inf and nan come back as values, never as warnings, as in BAM's manual pass.
@np.errstate(all="ignore")
def cbam_forward(x: np.ndarray, params: dict[str, np.ndarray],
                 pool_types: Sequence[str] = ("avg", "max"),
                 no_spatial: bool = False, training: bool = True,
                 eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """CBAM forward: x (N, C, H, W) -> y (N, C, H, W), and the cache for [`cbam_backward`][minibam.manual.cbam.cbam_backward].

    Cache keys a reader may want: ``"M_c"`` (N, C), ``"M_s"`` (N, 1, H, W) (None with
    ``no_spatial``), and ``"running"``, the batch-norm buffers after the pass.
    """
    F = check_cbam_inputs(x, params, pool_types, no_spatial, training, eps)
    N, C = F.shape[:2]
    layers, running = {}, {}
    # ---- channel gate: M_c = sigmoid(sum_k ReLU(pool_k(F) W0^T + b0) W1^T + b1) -------
    pools = [POOLS[kind][0](F) for kind in pool_types]  # each (value (N, C), its cache)
    F_c = np.concatenate([p for p, _ in pools])  # (|P| N, C): the MLP is shared, so stack
    z0, layers[FC_0] = linear_forward(F_c, params, FC_0)
    h0 = np.maximum(z0, 0)
    z1, layers[FC_1] = linear_forward(h0, params, FC_1)
    M_c = sigmoid(z1.reshape(len(pools), N, C).sum(axis=0))
    F1 = F * M_c[:, :, None, None]
    cache = {"F": F, "M_c": M_c, "F1": F1, "M_s": None, "pools": pools, "pool_types": pool_types,
             "relu_open": z0 > 0, "layers": layers, "running": running}
    if no_spatial:
        return F1, cache
    # ---- spatial gate: M_s = sigmoid(BN(conv7x7([max_c F1; mean_c F1]))) --------------
    winner = F1.argmax(axis=1)[:, None]  # (N, 1, H, W): the first maximal channel
    Q = np.concatenate([np.take_along_axis(F1, winner, 1), F1.mean(axis=1, keepdims=True)], 1)
    u, layers[CONV] = conv_forward(Q, params, CONV, padding=3, dilation=1)
    l_s, layers[BN] = bn_forward(u, params, BN, training, eps, running, momentum=BN_MOMENTUM)
    M_s = sigmoid(l_s)
    cache |= {"M_s": M_s, "winner": winner}
    return F1 * M_s, cache


@np.errstate(all="ignore")
def cbam_backward(dy: np.ndarray, cache: dict) -> dict[str, np.ndarray]:
    """CBAM backward: dL/dy -> {"x": dL/dx, and dL/dp for every parameter p, state_dict order}."""
    if not isinstance(cache, dict) or not {"F", "F1", "M_c", "M_s", "layers"} <= cache.keys():
        raise TypeError(f"cbam_backward: cache must be the dict returned by cbam_forward, got "
                        f"{type(cache).__name__}")
    F, F1, M_c, M_s, layers = cache["F"], cache["F1"], cache["M_c"], cache["M_s"], cache["layers"]
    dy = real_array(dy, "dy", "cbam_backward")
    if dy.shape != F.shape:
        raise ValueError(f"cbam_backward: dy has shape {dy.shape}, expected y's shape {F.shape}")
    grads: dict[str, np.ndarray] = {}
    dF1 = dy
    if M_s is not None:
        # y = F1 * M_s:  dL/dF1 = dy M_s,  dL/dM_s = sum_c dy F1
        dF1 = dy * M_s
        dl_s = (dy * F1).sum(axis=1, keepdims=True) * M_s * (1 - M_s)  # through the sigmoid
        du = bn_backward(dl_s, layers[BN], grads)
        dQ = conv_backward(du, layers[CONV], grads)  # (N, 2, H, W)
        # Q0 = max_c F1: all of dQ0 to the winning channel; Q1 = mean_c F1: dQ1 / C to each
        dF1 += dQ[:, 1:] / F.shape[1]
        dmax = np.zeros_like(dF1)
        np.put_along_axis(dmax, cache["winner"], dQ[:, :1], axis=1)
        dF1 += dmax
    # F1 = F * M_c:  dL/dF = dF1 M_c,  dL/dM_c = sum_{h,w} dF1 F
    dF = dF1 * M_c[:, :, None, None]
    dl_c = (dF1 * F).sum(axis=(2, 3)) * M_c * (1 - M_c)  # through the sigmoid
    # l_c = sum_k z1_k: every pool's MLP output gets the same gradient; the shared
    # weights' gradients sum over the stacked pools inside linear_backward
    dz1 = np.concatenate([dl_c] * len(cache["pools"]))
    dh0 = linear_backward(dz1, layers[FC_1], grads)
    dF_c = linear_backward(np.where(cache["relu_open"], dh0, 0), layers[FC_0], grads)
    for (_, pool_cache), dp, kind in zip(cache["pools"], np.split(dF_c, len(cache["pools"])),
                                         cache["pool_types"]):
        dF += POOLS[kind][1](dp, pool_cache)
    names = [f"{FC_0}.weight", f"{FC_0}.bias", f"{FC_1}.weight", f"{FC_1}.bias"]
    if M_s is not None:
        names += [f"{CONV}.weight", f"{BN}.weight", f"{BN}.bias"]
    return {"x": dF, **{name: grads[name] for name in names}}


# --------------------------------------------------------------------------------------
# The four plane pools, (N, C, H, W) -> (N, C): forward gives (p, cache), backward
# gives dL/dF from dL/dp (N, C).
# --------------------------------------------------------------------------------------


def _avg(F):
    return F.mean(axis=(2, 3)), F.shape


def _avg_backward(dp, shape):  # every pixel gets dp / (H W)
    return np.broadcast_to(dp[:, :, None, None] / (shape[2] * shape[3]), shape)


def _max(F):
    N, C, H, W = F.shape
    flat = F.reshape(N, C, H * W)  # sizes spelled out: -1 is ambiguous for an empty batch
    winner = flat.argmax(axis=2)[:, :, None]  # the first maximal pixel, as PyTorch
    return np.take_along_axis(flat, winner, 2)[:, :, 0], (F.shape, winner)


def _max_backward(dp, c):  # all of dp to the winning pixel
    shape, winner = c
    dflat = np.zeros((*shape[:2], shape[2] * shape[3]), dtype=dp.dtype)
    np.put_along_axis(dflat, winner, dp[:, :, None], axis=2)
    return dflat.reshape(shape)


def _lp(F):  # p = 2: the L2 norm of each plane
    p = np.sqrt((F * F).sum(axis=(2, 3)))
    return p, (F, p)


def _lp_backward(dp, c):  # dF = dp F / p, and 0 where the plane is all zeros (as PyTorch)
    F, p = c
    return np.where(p > 0, dp / np.where(p > 0, p, 1), 0)[:, :, None, None] * F


def _lse(F):
    m = F.max(axis=(2, 3), keepdims=True)  # exponents <= 0: no overflow
    p = (m + np.log(np.exp(F - m).sum(axis=(2, 3), keepdims=True)))[:, :, 0, 0]
    return p, (F, p)


def _lse_backward(dp, c):  # dF = dp softmax_{h,w}(F)
    F, p = c
    return dp[:, :, None, None] * np.exp(F - p[:, :, None, None])


POOLS = {"avg": (_avg, _avg_backward), "max": (_max, _max_backward),
         "lp": (_lp, _lp_backward), "lse": (_lse, _lse_backward)}
