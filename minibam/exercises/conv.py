"""Exercises 6-8: im2col, col2im as its adjoint, and conv2d's backward.

Derivations: docs/derivations/conv.md ("im2col", "col2im is the adjoint of im2col",
"Backward"). Hyper-parameters are always (H, W) pairs here, so that a solution need
not accept ints; ``F.conv2d`` itself takes both.
"""

from __future__ import annotations

import numpy as np

from minibam.exercises.core import (
    Case,
    Exercise,
    Mistake,
    finite_differences,
    side,
    upstream,
    values,
)
from minibam.function import Context
from minibam.ops.conv import Conv2d, geometry
from minibam.ops.conv import col2im as minibam_col2im
from minibam.ops.conv import im2col as minibam_im2col

IM2COL_DOC = "derivations/conv.md#im2col"
ADJOINT_DOC = "derivations/conv.md#col2im-is-the-adjoint-of-im2col"
DILATION_DOC = "derivations/conv.md#dilation"


def draw_geometry(rng: np.random.Generator) -> dict:
    """N, C, H, W and a kernel, stride, padding and dilation (pairs) that give an output
    of at least 1 x 1, as the test suite's hypothesis strategies assume()."""
    while True:
        kernel = (side(rng, 1, 3), side(rng, 1, 3))
        stride = (side(rng, 1, 2), side(rng, 1, 2))
        padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        dilation = (side(rng, 1, 2), side(rng, 1, 2))
        hw = (side(rng, 2, 6), side(rng, 2, 6))
        try:
            geometry("exercise", *hw, kernel, stride, padding, dilation)
        except ValueError:
            continue
        return {"N": side(rng, 1, 2), "C": side(rng, 1, 3), "H": hw[0], "W": hw[1], "kernel_size": kernel,
                "stride": stride, "padding": padding, "dilation": dilation}


FIRST = {"N": 2, "C": 2, "H": 5, "W": 6, "kernel_size": (3, 2), "stride": (1, 2),
         "padding": (1, 1), "dilation": (2, 1)}  # every hyper-parameter at work, overlapping windows


def _geometries(rng: np.random.Generator, count: int) -> list[dict]:
    return [FIRST] + [draw_geometry(rng) for _ in range(count - 1)]


def _hyper(g: dict) -> dict:
    return {k: g[k] for k in ("kernel_size", "stride", "padding", "dilation")}


def _shown(g: dict, **shapes: tuple) -> dict:
    return {**shapes, **_hyper(g)}


def _out(g: dict) -> tuple[int, int]:
    return geometry("exercise", g["H"], g["W"], *_hyper(g).values()).out


# ---------------------------------------------------------------------------- im2col


def loop_im2col(x: np.ndarray, kernel_size: tuple, stride: tuple, padding: tuple, dilation: tuple,
                extra_pad: int = 0, extra_gap: int = 0, tap_major: bool = False) -> np.ndarray:
    """im2col by explicit windows; the keyword arguments make the catalogued mistakes."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    dh, dw = dilation[0] + extra_gap, dilation[1] + extra_gap
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    e = extra_pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph + e, ph + e), (pw + e, pw + e)))
    cols = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
    if tap_major:
        return cols.transpose(0, 2, 3, 1, 4, 5).reshape(n, c * kh * kw, oh * ow)
    return cols.reshape(n, c * kh * kw, oh * ow)


def _im2col_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for g in _geometries(rng, 6):
        shape = (g["N"], g["C"], g["H"], g["W"])
        cases.append(Case(_shown(g, x_shape=shape), {"x": values(rng, shape), **_hyper(g)}))
    return cases


IM2COL = Exercise(
    name="im2col",
    own=("minibam.ops.conv:im2col",),
    title="im2col with stride, padding and dilation",
    doc=IM2COL_DOC,
    intro=(
        "Copy every receptive field of `x` (N, C, H, W) into a column, so that a convolution "
        "becomes one matrix product. Return `cols` of shape (N, C*kH*kW, oH*oW) in PyTorch's "
        "`unfold` layout: row `(c*kH + i)*kW + j`, column `a*oW + b`, "
        "`cols[n, row, col] = x_padded[n, c, a*sH + i*dH, b*sW + j*dW]`, with "
        "`oH = (H + 2pH - dH(kH - 1) - 1) // sH + 1`. Dilation 1 means no gaps. Each "
        "hyper-parameter is an (H, W) pair of ints."
    ),
    stub='''def im2col(x, kernel_size, stride, padding, dilation):
    """(N, C, H, W) -> (N, C*kH*kW, oH*oW); kernel_size, stride, padding, dilation are pairs."""
    raise NotImplementedError
''',
    outputs=("cols",),
    make_cases=_im2col_cases,
    reference=minibam_im2col,
    mistakes=(
        Mistake("dilation off by one",
                "Dilation 1 means no gaps (PyTorch): tap i of the kernel reads i*d rows below the "
                "window's corner, and the kernel spans d*(k-1)+1 pixels.", DILATION_DOC,
                lambda x, kernel_size, stride, padding, dilation:
                loop_im2col(x, kernel_size, stride, padding, dilation, extra_gap=1)),
        Mistake("padding off by one",
                "Pad exactly `padding` zeros on each side: x_padded[h + pH, w + pW] = x[h, w].",
                "derivations/conv.md#what-conv2d-computes",
                lambda x, kernel_size, stride, padding, dilation:
                loop_im2col(x, kernel_size, stride, padding, dilation, extra_pad=1)),
        Mistake("rows ordered by kernel tap, then channel",
                "Row (c*kH + i)*kW + j: channel first, then the tap, so that the rows match "
                "weight.reshape(O, C*kH*kW).", IM2COL_DOC,
                lambda x, kernel_size, stride, padding, dilation:
                loop_im2col(x, kernel_size, stride, padding, dilation, tap_major=True)),
    ),
)

# ---------------------------------------------------------------------------- col2im


def loop_col2im(cols: np.ndarray, input_shape: tuple, kernel_size: tuple, stride: tuple, padding: tuple,
                dilation: tuple, assign: bool = False, crop: bool = True, average: bool = False) -> np.ndarray:
    """col2im by explicit windows; the keyword arguments make the catalogued mistakes."""
    n, c, h, w = input_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    slabs = cols.reshape(n, c, kh, kw, oh, ow)
    out = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    count = np.zeros_like(out)
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                      slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
            if assign:
                out[window] = slabs[:, :, i, j]
            else:
                out[window] += slabs[:, :, i, j]
            count[window] += 1
    if average:
        out = out / np.maximum(count, 1)
    return out[:, :, ph: ph + h, pw: pw + w] if crop else out


def _col2im_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for g in _geometries(rng, 6):
        shape = (g["N"], g["C"], g["H"], g["W"])
        oh, ow = _out(g)
        cols = (g["N"], g["C"] * g["kernel_size"][0] * g["kernel_size"][1], oh * ow)
        cases.append(Case(_shown(g, input_shape=shape, cols_shape=cols),
                          {"cols": upstream(rng, cols), "input_shape": shape, **_hyper(g)}))
    return cases


def _col2im_numeric(case: Case) -> dict[str, np.ndarray]:
    """col2im(Z) is the gradient of <im2col(x), Z> with respect to x."""
    a = case.args
    return finite_differences(lambda x: minibam_im2col(x, a["kernel_size"], a["stride"], a["padding"], a["dilation"]),
                              {"x": np.zeros(a["input_shape"])}, a["cols"], {"x_grad": "x"})


def _mistake(**fault: bool):
    def wrong(cols, input_shape, kernel_size, stride, padding, dilation):
        return loop_col2im(cols, input_shape, kernel_size, stride, padding, dilation, **fault)

    return wrong


COL2IM = Exercise(
    name="col2im",
    own=("minibam.ops.conv:col2im",),
    title="col2im: the adjoint of im2col (overlapping windows)",
    doc=ADJOINT_DOC,
    intro=(
        "`col2im(cols, input_shape, ...)` is the transpose of `im2col`: add every column "
        "entry back to the input pixel it was read from. Where windows overlap a pixel "
        "receives a sum; padding receives nothing (crop it away). It is the backward of "
        "im2col, so the checker compares it with finite differences of "
        "$\\langle \\mathrm{im2col}(x), \\mathrm{cols}\\rangle$."
    ),
    stub='''def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """(N, C*kH*kW, oH*oW) -> (N, C, H, W), the adjoint of im2col; input_shape is (N, C, H, W)."""
    raise NotImplementedError
''',
    outputs=("x_grad",),
    gradients=("x_grad",),
    make_cases=_col2im_cases,
    reference=minibam_col2im,
    numeric=_col2im_numeric,
    mistakes=(
        Mistake("assigns instead of accumulating",
                "Where windows overlap, a pixel was copied into several columns and must "
                "receive the sum of their gradients: += , not =.", ADJOINT_DOC, _mistake(assign=True)),
        Mistake("averages overlapping windows",
                "col2im is the transpose of im2col, not its inverse: overlapping entries add up, "
                "they are not averaged.", ADJOINT_DOC, _mistake(average=True)),
        Mistake("padding not cropped",
                "Accumulate into the padded shape, then return only the inner H x W: the "
                "padding zeros were constants and get no gradient.", ADJOINT_DOC, _mistake(crop=False)),
    ),
)

# ---------------------------------------------------------------------------- conv2d backward


def _conv_reference(grad, x, weight, stride, padding, dilation):
    g = geometry("conv2d", x.shape[2], x.shape[3], weight.shape[2:], stride, padding, dilation)
    ctx = Context((True, True, True))
    Conv2d.forward(ctx, x, weight, np.zeros(weight.shape[0]), g)
    return Conv2d.backward(ctx, grad)


def _conv_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for g in _geometries(rng, 5):
        o = side(rng, 1, 3)
        xs, ws = (g["N"], g["C"], g["H"], g["W"]), (o, g["C"], *g["kernel_size"])
        hyper = {k: g[k] for k in ("stride", "padding", "dilation")}
        cases.append(Case({"x.shape": xs, "weight.shape": ws, **hyper},
                          {"grad": upstream(rng, (g["N"], o, *_out(g))), "x": values(rng, xs),
                           "weight": values(rng, ws), **hyper}))
    return cases


def _conv_numeric(case: Case) -> dict[str, np.ndarray]:
    a = case.args
    g = geometry("conv2d", a["x"].shape[2], a["x"].shape[3], a["weight"].shape[2:], a["stride"],
                 a["padding"], a["dilation"])

    def forward(x, weight, bias):
        return Conv2d.forward(Context((False,) * 3), x, weight, bias, g)

    inputs = {"x": a["x"], "weight": a["weight"], "bias": np.zeros(a["weight"].shape[0])}
    return finite_differences(forward, inputs, a["grad"],
                              {"grad_x": "x", "grad_weight": "weight", "grad_bias": "bias"})


def _conv_by_hand(grad, x, weight, stride, padding, dilation, flip=False, bias_per_pixel=False,
                  weight_mean=False):
    n, o = grad.shape[:2]
    kernel = weight.shape[2:]
    cols = loop_im2col(x, kernel, stride, padding, dilation)
    g3 = grad.reshape(n, o, -1)
    gw = np.einsum("nol,nkl->ok", g3, cols).reshape(weight.shape)
    if weight_mean:
        gw = gw / n
    gb = grad.sum(axis=0) if bias_per_pixel else grad.sum(axis=(0, 2, 3))
    w = weight[:, :, ::-1, ::-1] if flip else weight
    dcols = np.einsum("ok,nol->nkl", w.reshape(o, -1), g3)
    gx = loop_col2im(dcols, x.shape, kernel, stride, padding, dilation)
    return gx, gw, gb


def _conv_mistake(**fault: bool):
    def wrong(grad, x, weight, stride, padding, dilation):
        return _conv_by_hand(grad, x, weight, stride, padding, dilation, **fault)

    return wrong


BACKWARD_DOC = "derivations/conv.md#backward"

CONV2D = Exercise(
    name="conv2d_backward",
    own=("minibam.ops.conv:Conv2d", "minibam.manual"),
    title="conv2d backward: weight, input via col2im, bias",
    doc=BACKWARD_DOC,
    intro=(
        "With $X_n = \\mathrm{im2col}(x)_n$ and the weight as a matrix $W$ (O, C kH kW), the "
        "forward is $Y_n = W X_n + b$. Write `conv2d_backward(grad, x, weight, stride, padding, "
        "dilation)` returning `(grad_x, grad_weight, grad_bias)`: "
        "$\\bar W = \\sum_n \\bar Y_n X_n^\\top$, $\\bar b = \\sum_n \\bar Y_n \\mathbf 1$, "
        "$\\bar x = \\mathrm{col2im}(W^\\top \\bar Y)$. Use your `im2col` and `col2im` (or "
        "minibam's: `from minibam.functional import im2col, col2im`)."
    ),
    stub='''def conv2d_backward(grad, x, weight, stride, padding, dilation):
    """Gradients of y = conv2d(x, weight, bias, stride, padding, dilation) (pairs).

    grad: dL/dy (N, O, oH, oW); x (N, C, H, W); weight (O, C, kH, kW).
    Returns (grad_x, grad_weight, grad_bias).
    """
    raise NotImplementedError
''',
    outputs=("grad_x", "grad_weight", "grad_bias"),
    gradients=("grad_x", "grad_weight", "grad_bias"),
    make_cases=_conv_cases,
    reference=_conv_reference,
    numeric=_conv_numeric,
    mistakes=(
        Mistake("flipped kernel",
                "conv2d is a cross-correlation (PyTorch does not flip the kernel), and so is the "
                "col2im form of its input gradient: W^T grad, then col2im, with no flip anywhere.",
                "derivations/conv.md#input-col2im", _conv_mistake(flip=True)),
        Mistake("bias gradient summed over the batch only",
                "The bias is added at every output pixel of every sample: sum grad over N, oH and oW.",
                "derivations/conv.md#weight-and-bias", _conv_mistake(bias_per_pixel=True)),
        Mistake("weight gradient averaged over the batch",
                "The same weight is used for every sample, and a parameter used several times "
                "receives the sum of the gradients of all uses, not their mean.",
                "derivations/conv.md#weight-and-bias", _conv_mistake(weight_mean=True)),
    ),
)
