r"""The whole CBAM forward and backward pass by hand, in plain NumPy (cs231n style).

    y, cache = cbam_forward(x, params, pool_types=("avg", "max"), no_spatial=False, training=True)
    grads = cbam_backward(dy, cache)     # {"x": dL/dx, "<parameter name>": dL/dparameter, ...}

No autograd: the layer helpers are BAM's (manual/bam.py). ``params`` uses the
``CBAM.state_dict()`` names, which are those of the authors' released code.
Derivations: docs/derivations/cbam.md.

Symbols (Woo et al., ECCV 2018, section 3; K pools, r the reduction ratio):

    F        (N, C, H, W)   input feature map (x)
    P        (K N, C)       the pooled vectors pool_k(F), stacked: one MLP serves them all
    z, h, a  (K N, C/r), (K N, C/r), (K N, C)    z = W0 P + b0, h = ReLU(z), a = W1 h + b1
    M_c      (N, C)         channel attention sigmoid(sum_k a_k)
    F1       (N, C, H, W)   F' = F * M_c
    Q        (N, 2, H, W)   [max_c F1; mean_c F1]
    u, b     (N, 1, H, W)   u = f^{7x7}(Q) (no bias), b = BN(u) (momentum 0.01)
    M_s      (N, 1, H, W)   spatial attention sigmoid(b)
    y        (N, C, H, W)   F'' = F1 * M_s
"""

from collections.abc import Sequence

import numpy as np

from minibam.manual.bam import (
    _bn_backward,
    _bn_forward,
    _conv_backward,
    _conv_forward,
    _linear_backward,
    _linear_forward,
    _sigmoid,
)

FC_0, FC_1 = "ChannelGate.mlp.1", "ChannelGate.mlp.3"
CONV, BN = "SpatialGate.spatial.conv", "SpatialGate.spatial.bn"
BN_MOMENTUM = 0.01  # the released code's, for its one batch norm


def cbam_forward(x: np.ndarray, params: dict[str, np.ndarray],
                 pool_types: Sequence[str] = ("avg", "max"),
                 no_spatial: bool = False, training: bool = True,
                 eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """CBAM forward: x (N, C, H, W) -> y (N, C, H, W), and the cache for [`cbam_backward`][minibam.manual.cbam_backward].

    Cache keys a reader may want: ``"M_c"`` (N, C), ``"M_s"`` (N, 1, H, W) (None with
    ``no_spatial``), and ``"running"``, the batch-norm buffers after the pass.
    """
    F = _check_inputs(x, params, pool_types, no_spatial, training)
    N, C = F.shape[:2]
    layers, running = {}, {}
    # ---- channel gate: M_c = sigmoid(sum_k W1 ReLU(W0 pool_k(F) + b0) + b1) ---------
    pools = [POOLS[kind][0](F) for kind in pool_types]  # each (value (N, C), its cache)
    P = np.concatenate([p for p, _ in pools])  # (K N, C): the MLP is shared, so stack
    z, layers[FC_0] = _linear_forward(P, params, FC_0)
    h = np.maximum(z, 0)
    a, layers[FC_1] = _linear_forward(h, params, FC_1)
    M_c = _sigmoid(a.reshape(len(pools), N, C).sum(axis=0))
    F1 = F * M_c[:, :, None, None]
    cache = {"F": F, "M_c": M_c, "F1": F1, "M_s": None, "pools": pools, "pool_types": pool_types,
             "relu_open": z > 0, "layers": layers, "running": running}
    if no_spatial:
        return F1, cache
    # ---- spatial gate: M_s = sigmoid(BN(conv7x7([max_c F1; mean_c F1]))) --------------
    winner = F1.argmax(axis=1)[:, None]  # (N, 1, H, W): the first maximal channel
    Q = np.concatenate([np.take_along_axis(F1, winner, 1), F1.mean(axis=1, keepdims=True)], 1)
    u, layers[CONV] = _conv_forward(Q, params, CONV, padding=3, dilation=1)
    b, layers[BN] = _bn_forward(u, params, BN, training, eps, running, momentum=BN_MOMENTUM)
    M_s = _sigmoid(b)
    cache |= {"M_s": M_s, "winner": winner}
    return F1 * M_s, cache


def cbam_backward(dy: np.ndarray, cache: dict) -> dict[str, np.ndarray]:
    """CBAM backward: dL/dy -> {"x": dL/dx, and dL/dp for every parameter p, state_dict order}."""
    F, F1, M_c, M_s, layers = cache["F"], cache["F1"], cache["M_c"], cache["M_s"], cache["layers"]
    dy = np.asarray(dy)
    if dy.shape != F.shape:
        raise ValueError(f"cbam_backward: dy has shape {dy.shape}, expected y's shape {F.shape}")
    grads: dict[str, np.ndarray] = {}
    dF1 = dy
    if M_s is not None:
        # y = F1 * M_s:  dL/dF1 = dy M_s,  dL/dM_s = sum_c dy F1
        dF1 = dy * M_s
        db = (dy * F1).sum(axis=1, keepdims=True) * M_s * (1 - M_s)  # through the sigmoid
        du = _bn_backward(db, layers[BN], grads)
        dQ = _conv_backward(du, layers[CONV], grads)  # (N, 2, H, W)
        # Q0 = max_c F1: all of dQ0 to the winning channel; Q1 = mean_c F1: dQ1 / C to each
        dF1 += dQ[:, 1:] / F.shape[1]
        dmax = np.zeros_like(dF1)
        np.put_along_axis(dmax, cache["winner"], dQ[:, :1], axis=1)
        dF1 += dmax
    # F1 = F * M_c:  dL/dF = dF1 M_c,  dL/dM_c = sum_{h,w} dF1 F
    dF = dF1 * M_c[:, :, None, None]
    d_logits = (dF1 * F).sum(axis=(2, 3)) * M_c * (1 - M_c)  # through the sigmoid
    # logits = sum_k a_k: every pool's MLP output gets the same gradient; the shared
    # weights' gradients sum over the stacked pools inside _linear_backward
    da = np.concatenate([d_logits] * len(cache["pools"]))
    dh = _linear_backward(da, layers[FC_1], grads)
    dP = _linear_backward(np.where(cache["relu_open"], dh, 0), layers[FC_0], grads)
    for (_, pool_cache), dp, kind in zip(cache["pools"], np.split(dP, len(cache["pools"])),
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
    flat = F.reshape(*F.shape[:2], -1)
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


def _check_inputs(x, params, pool_types, no_spatial, training) -> np.ndarray:
    """Validate everything up front; return x as a float array."""
    if isinstance(pool_types, str) or not pool_types or any(k not in POOLS for k in pool_types):
        raise ValueError(f"cbam_forward: pool_types must be a non-empty sequence drawn from "
                         f"{tuple(POOLS)}, got {pool_types!r}")
    F = np.asarray(x)
    if not np.issubdtype(F.dtype, np.floating):
        F = F.astype(np.float64)
    if F.ndim != 4:
        raise ValueError(f"cbam_forward: x must be 4-D (N, C, H, W), got shape {F.shape}")
    N, C, H, W = F.shape
    if training and not no_spatial and N * H * W < 2:
        raise ValueError(f"cbam_forward: training needs more than one value per channel for the "
                         f"spatial batch norm, got x of shape {F.shape}")
    w0 = np.shape(params.get(f"{FC_0}.weight", ()))
    Cr = w0[0] if len(w0) == 2 else 0  # the hidden width, read from the first layer
    expected = {f"{FC_0}.weight": (Cr, C), f"{FC_0}.bias": (Cr,),
                f"{FC_1}.weight": (C, Cr), f"{FC_1}.bias": (C,)}
    if not no_spatial:
        expected |= {f"{CONV}.weight": (1, 2, 7, 7), **{f"{BN}.{k}": (1,) for k in (
            "weight", "bias", "running_mean", "running_var")}}
    optional = set() if no_spatial else {f"{BN}.num_batches_tracked"}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected) - optional)
    wrong = [f"{k}: got {np.shape(params[k])}, expected {s}" for k, s in expected.items()
             if k in params and np.shape(params[k]) != s]
    if missing or unexpected or wrong or Cr == 0:
        raise ValueError(f"cbam_forward: params do not match CBAM({C}, no_spatial={no_spatial}) "
                         f"for x of shape {F.shape}: missing keys {missing}, unexpected keys "
                         f"{unexpected}, wrong shapes {wrong}")
    return F
