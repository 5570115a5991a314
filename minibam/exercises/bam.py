"""Exercises 12-13: BAM's combination step, then the whole BAM backward by hand.

Derivation: docs/derivations/bam.md. The last exercise takes the cache of
``minibam.manual.bam_forward`` and must return what ``minibam.manual.bam_backward``
returns; its mistakes are that backward with one step left out.
"""

from __future__ import annotations

import copy

import numpy as np

from minibam import manual
from minibam.exercises.core import (
    FD_EPS,
    Case,
    Exercise,
    Mistake,
    finite_differences,
    side,
    upstream,
    values,
)
from minibam.function import Context
from minibam.gradcheck import numeric_gradient
from minibam.manual.layout import bam_layers
from minibam.ops.attention import BamCombine

COMBINE_DOC = "derivations/bam.md#combining-the-branches"
TRAINING_BN_DOC = "derivations/batchnorm.md#training-mode-backward"

# ---------------------------------------------------------------------------- the combination


def _combine_reference(grad, x, mc, ms, combine):
    ctx = Context((True, True, True))
    BamCombine.forward(ctx, x, mc, ms, combine)
    return BamCombine.backward(ctx, grad)


def _combine_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for i in range(6):
        combine = ("sum", "product")[i % 2]
        n, c, h, w = side(rng), side(rng, 2), side(rng, 2), side(rng, 2)
        shapes = {"x": (n, c, h, w), "mc": (n, c, 1, 1), "ms": (n, 1, h, w)}
        cases.append(Case({"combine": combine, "x.shape": shapes["x"]},
                          {"grad": upstream(rng, shapes["x"]),
                           **{k: values(rng, s) for k, s in shapes.items()}, "combine": combine}))
    return cases


def _combine_numeric(case: Case) -> dict[str, np.ndarray]:
    a = case.args

    def forward(x, mc, ms):
        return BamCombine.forward(Context((False,) * 3), x, mc, ms, a["combine"])

    return finite_differences(forward, {"x": a["x"], "mc": a["mc"], "ms": a["ms"]}, a["grad"],
                              {"grad_x": "x", "grad_mc": "mc", "grad_ms": "ms"})


def _combine_by_hand(grad, x, mc, ms, combine, one_plus=True, rule=None, own_map=False):
    a = mc + ms if combine == "sum" else mc * ms
    m = 1 / (1 + np.exp(-a))
    dx = grad * (1 + m) if one_plus else grad * m
    ds = grad * x * m * (1 - m)
    if (rule or combine) == "sum":
        return dx, ds.sum(axis=(2, 3), keepdims=True), ds.sum(axis=1, keepdims=True)
    weight_c, weight_s = (mc, ms) if own_map else (ms, mc)
    return dx, (ds * weight_c).sum(axis=(2, 3), keepdims=True), (ds * weight_s).sum(axis=1, keepdims=True)


def _combine_fault(swap_rules: bool = False, swap_outputs: bool = False, always: str | None = None,
                   **fault: bool):
    def wrong(grad, x, mc, ms, combine):
        rule = {"sum": "product", "product": "sum"}[combine] if swap_rules else always
        dx, dmc, dms = _combine_by_hand(grad, x, mc, ms, combine, rule=rule, **fault)
        return (dx, dms, dmc) if swap_outputs else (dx, dmc, dms)

    return wrong


COMBINE = Exercise(
    name="bam_combine_backward",
    own=("minibam.ops.attention:BamCombine", "minibam.manual"),
    title="BAM's combination step, both variants",
    doc=COMBINE_DOC,
    intro=(
        "BAM ends with $y = x\\,(1 + \\sigma(a))$ where $a = M_c + M_s$ (the paper, "
        "`combine=\"sum\"`) or $a = M_c M_s$ (the authors' code, `\"product\"`), with "
        "`mc` (N, C, 1, 1) and `ms` (N, 1, H, W) broadcast to x's (N, C, H, W). Write "
        "`bam_combine_backward(grad, x, mc, ms, combine)` returning "
        "`(grad_x, grad_mc, grad_ms)`. Mind the residual: $x$ is used twice."
    ),
    stub='''def bam_combine_backward(grad, x, mc, ms, combine):
    """Gradients of y = x * (1 + sigmoid(mc + ms)) (combine="sum") or
    x * (1 + sigmoid(mc * ms)) (combine="product"); mc (N, C, 1, 1), ms (N, 1, H, W).

    Returns (grad_x, grad_mc, grad_ms).
    """
    raise NotImplementedError
''',
    outputs=("grad_x", "grad_mc", "grad_ms"),
    gradients=("grad_x", "grad_mc", "grad_ms"),
    make_cases=_combine_cases,
    reference=_combine_reference,
    numeric=_combine_numeric,
    mistakes=(
        Mistake("the (1 + s) factor missing",
                "y = x + x*s: x reaches y directly (the residual) and through the product, so "
                "grad_x = grad * (1 + s), not grad * s.", COMBINE_DOC, _combine_fault(one_plus=False)),
        Mistake("sum and product mixed up",
                "With a sum both maps receive the same d(loss)/da, reduced over different axes; "
                "with a product each is weighted by the other map. Use the rule of `combine`.",
                COMBINE_DOC, _combine_fault(swap_rules=True)),
        Mistake("branch gradients returned swapped",
                "grad_mc has the channel map's shape (N, C, 1, 1): a sum over H and W; grad_ms the "
                "spatial map's (N, 1, H, W): a sum over the channels.", COMBINE_DOC,
                _combine_fault(swap_outputs=True)),
        Mistake("both variants differentiated with the sum rule",
                "With combine=\"product\", a = mc * ms: d(a)/d(mc) = ms, so the channel map's "
                "gradient is (ds * ms) summed over H and W, and the spatial map's (ds * mc) summed "
                "over the channels. The sum rule is right for combine=\"sum\" only.",
                COMBINE_DOC, _combine_fault(always="sum")),
        Mistake("both variants differentiated with the product rule",
                "With combine=\"sum\", a = mc + ms: both maps receive d(loss)/da itself, summed "
                "over the axes each was broadcast along, with no weighting by the other map.",
                COMBINE_DOC, _combine_fault(always="product")),
        Mistake("product: each branch weighted by its own map",
                "d(mc*ms)/dmc = ms: the channel map's gradient is weighted by the spatial map, "
                "and the other way round.", COMBINE_DOC, _combine_fault(own_map=True)),
    ),
)

# ---------------------------------------------------------------------------- the whole BAM


def random_params(rng: np.random.Generator, channels: int, reduced: int, n_dilated: int,
                  variant: str) -> dict[str, np.ndarray]:
    """Random weights and non-trivial batch-norm state for ``manual.bam_forward``."""
    params = {}
    for layer, shapes in bam_layers(channels, reduced, n_dilated, variant).items():
        is_bn = "running_var" in shapes
        for name, shape in shapes.items():
            if is_bn and name == "weight":
                value = rng.uniform(0.5, 1.5, shape)
            elif name == "running_var":
                value = rng.uniform(0.5, 2.0, shape)
            elif name in ("bias", "running_mean"):
                value = 0.2 * rng.standard_normal(shape)
            else:
                value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
            params[f"{layer}.{name}"] = value
    return params


def _bam_cases(rng: np.random.Generator) -> list[Case]:
    configs = [("paper", 1, 2), ("official", 1, 1), ("paper", 2, 1)]
    cases = []
    for variant, n_dilated, dilation in configs:
        shape = (3, 4, side(rng, 3, 4), side(rng, 3, 4))
        params = random_params(rng, 4, 2, n_dilated, variant)
        x = values(rng, shape)
        _, cache = manual.bam_forward(x, params, variant, training=True, dilation_val=dilation)
        cases.append(Case({"variant": variant, "x.shape": shape, "dilated convs": n_dilated,
                           "dilation": dilation},
                          {"dy": upstream(rng, shape), "cache": cache},
                          hidden={"x": x, "params": params, "dilation": dilation}))
    return cases


def _bam_numeric(case: Case) -> dict[str, np.ndarray]:
    dy, cache, hidden = case.args["dy"], case.args["cache"], case.hidden
    x = np.array(hidden["x"])
    params = {k: np.array(v) for k, v in hidden["params"].items()}

    def loss() -> float:
        y, _ = manual.bam_forward(x, params, cache["variant"], training=True,
                                  dilation_val=hidden["dilation"])
        return float(np.sum(y * dy))

    grads = {"x": numeric_gradient(loss, x, FD_EPS)}
    for name in cache["param_names"]:
        grads[name] = numeric_gradient(loss, params[name], FD_EPS)
    return grads


def _backward_with(dy: np.ndarray, cache: dict, residual: bool = True, channel_share: bool = True,
                   gap_divides: bool = True, bn_training: bool = True) -> dict[str, np.ndarray]:
    """``manual.bam_backward`` with one step optionally left out: the catalogued mistakes."""
    F, M, M_c, M_s = cache["F"], cache["M"], cache["M_c"], cache["M_s"]
    layers, n, paper = copy.deepcopy(cache["layers"]), cache["n_dilated"], cache["variant"] == "paper"
    if not bn_training:
        for layer in layers.values():
            if "training" in layer:
                layer["training"] = False
    grads: dict[str, np.ndarray] = {}
    dF = dy * (1 + M) if residual else dy * M
    ds = dy * F * M * (1 - M)
    if paper:
        dM_c, dM_s = ds.sum(axis=(2, 3)), ds.sum(axis=1, keepdims=True)
    else:
        dM_c = (ds * M_s).sum(axis=(2, 3))
        dM_s = (ds * M_c[:, :, None, None]).sum(axis=1, keepdims=True)
    du_f = manual.bn_backward(dM_s, layers[manual.BN_S_FINAL], grads) if paper else dM_s
    dg = manual.conv_backward(du_f, layers[manual.CONV_FINAL], grads)
    for i in reversed(range(n)):
        du = manual.bn_relu_backward(dg, layers[manual.bn_di(i)], grads)
        dg = manual.conv_backward(du, layers[manual.conv_di(i)], grads)
    du0 = manual.bn_relu_backward(dg, layers[manual.BN_REDUCE], grads)
    dF = dF + manual.conv_backward(du0, layers[manual.CONV_REDUCE], grads)
    dz1 = manual.bn_backward(dM_c, layers[manual.BN_C_FINAL], grads) if paper else dM_c
    dh0 = manual.linear_backward(dz1, layers[manual.FC_FINAL], grads)
    dz0 = manual.bn_relu_backward(dh0, layers[manual.BN_1], grads)
    dF_c = manual.linear_backward(dz0, layers[manual.FC_0], grads)
    H, W = F.shape[2:]
    if channel_share:
        dF = dF + dF_c[:, :, None, None] / (H * W if gap_divides else 1)
    return {"x": dF, **{name: grads[name] for name in cache["param_names"]}}


def _bam_fault(**fault: bool):
    def wrong(dy, cache):
        return _backward_with(dy, cache, **fault)

    return wrong


WHOLE_DOC = "derivations/bam.md#the-whole-backward-in-order"

WHOLE = Exercise(
    name="bam_backward",
    own=("minibam.manual",),
    title="The whole BAM backward, by hand",
    doc=WHOLE_DOC,
    intro=(
        "The last one: BAM's whole backward pass in plain NumPy, in the style of "
        "`minibam.manual`. `cache` is what `minibam.manual.bam_forward(x, params, variant, "
        "training=True)` returns: `cache[\"F\"]` (the input), `\"M_c\"` (N, C), `\"M_s\"` "
        "(N, 1, H, W), `\"M\"` (the attention), `\"variant\"`, `\"n_dilated\"`, "
        "`\"param_names\"` and `cache[\"layers\"][name]` for every layer: a linear layer "
        "keeps its input `\"x\"` and weight `\"w\"`; a convolution `\"cols\"` (its im2col "
        "columns), `\"w\"`, `\"x_shape\"`, `\"padding\"`, `\"dilation\"`; a batch norm "
        "`\"x_hat\"`, `\"inv_std\"`, `\"gamma\"`, `\"axes\"` and, when a ReLU follows, "
        "`\"relu_open\"` (where its output was positive). Return a dict with `\"x\"` and the "
        "gradient of every name in `cache[\"param_names\"]`. Your earlier solutions are the "
        "building blocks."
    ),
    stub='''def bam_backward(dy, cache):
    """BAM backward: dL/dy (N, C, H, W) and the cache of minibam.manual.bam_forward ->
    {"x": dL/dx, "<parameter name>": dL/dparameter for every name in cache["param_names"]}."""
    raise NotImplementedError
''',
    outputs=("grads",),
    gradients=None,
    make_cases=_bam_cases,
    reference=manual.bam_backward,
    numeric=_bam_numeric,
    fd_cases=1,
    mistakes=(
        Mistake("the residual path forgotten",
                "y = F (1 + M): F reaches y directly as well as through M, so dF starts from "
                "dy * (1 + M), not dy * M.", "derivations/bam.md#where-the-inputs-gradient-comes-from",
                _bam_fault(residual=False)),
        Mistake("the channel branch's share of dx forgotten",
                "F is read three times (the product, the spatial branch, the channel branch's "
                "pooling); its gradient is the sum of all three.",
                "derivations/bam.md#where-the-inputs-gradient-comes-from", _bam_fault(channel_share=False)),
        Mistake("pooling's backward not divided by H W",
                "F_c is a mean over H x W, so each pixel receives dF_c / (H W).",
                "derivations/pool.md#global-average-pooling", _bam_fault(gap_divides=False)),
        Mistake("evaluation-mode batch-norm backward in training",
                "In training every batch norm's mean and variance depend on its input: use the "
                "training-mode backward, with the mean and variance terms.", TRAINING_BN_DOC,
                _bam_fault(bn_training=False)),
    ),
)
