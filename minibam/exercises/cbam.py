"""Exercises 14-15: the backward of global max pooling, then CBAM's channel gate with its
shared MLP. Derivation: docs/derivations/cbam.md.

Max pooling's cases hold distinct values (a unique maximum, far from a tie, so that
finite differences apply), except one case with deliberate ties, where the expected
answer is PyTorch's (everything to the first maximum) and finite differences are not
used (they measure the even split at a tie).
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
from minibam.manual.cbam import FC_0, FC_1, cbam_backward, cbam_forward
from minibam.ops.pool import GlobalMaxPool2d

MAX_DOC = "derivations/cbam.md#over-the-plane"
TIES_DOC = "derivations/cbam.md#ties"
GATE_DOC = "derivations/cbam.md#the-channel-gate-one-mlp-for-every-pool"


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values 0.1 apart in random order: every maximum unique, by far more than FD's eps."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) * 0.1 + rng.uniform(0, 0.01)


# ---------------------------------------------------------------------------- max pooling


def _max_reference(grad, x):
    ctx = Context((True,))
    GlobalMaxPool2d.forward(ctx, x)
    return np.array(GlobalMaxPool2d.backward(ctx, grad)[0])


def _max_cases(rng: np.random.Generator) -> list[Case]:
    shapes = [(2, 3, 3, 5), (2, 2, 4, 2)]  # not square: H and W must not be mixed up
    while len(shapes) < 5:
        shapes.append((side(rng), side(rng), side(rng), side(rng, 2)))
    cases = [Case({"x.shape": s}, {"grad": upstream(rng, s[:2]), "x": distinct(rng, s)}) for s in shapes]
    tied = np.round(values(rng, (2, 2, 3, 4)))  # integers in [-2, 2]: many ties
    tied[:, :, 1, 2] = 3.0  # ... and a tie for the maximum in every plane
    tied[:, :, 2, 0] = 3.0
    cases.append(Case({"x.shape": tied.shape, "ties": True},
                      {"grad": upstream(rng, tied.shape[:2]), "x": tied}))
    return cases


def _max_numeric(case: Case) -> dict[str, np.ndarray]:
    if case.params.get("ties"):
        return {}  # not differentiable at a tie: finite differences give the even split
    a = case.args
    return finite_differences(lambda x: x.max(axis=(2, 3)), {"x": a["x"]}, a["grad"], {"grad_x": "x"})


def _like_an_average(grad, x):
    n, c, h, w = x.shape
    return np.array(np.broadcast_to(grad[:, :, None, None] / (h * w), x.shape))


def _to_every_element(grad, x):
    return np.array(np.broadcast_to(grad[:, :, None, None], x.shape))


def _to_every_maximum(grad, x):
    return np.where(x == x.max(axis=(2, 3), keepdims=True), grad[:, :, None, None], 0.0)


MAX_POOL = Exercise(
    name="global_max_pool2d_backward",
    own=("minibam.ops.pool:GlobalMaxPool2d", "minibam.manual"),
    title="Global max pooling backward: the gradient of a maximum",
    doc=MAX_DOC,
    intro=(
        "CBAM's channel gate also pools with $y_{nc} = \\max_{h,w} x_{nchw}$. Only the element "
        "that wins moves $y$, so it alone receives the gradient. Write "
        "`global_max_pool2d_backward(grad, x)`: `grad` is dL/dy of shape (N, C), `x` the input "
        "(N, C, H, W); return dL/dx. At a tie, do what PyTorch's max pooling does: give the "
        "whole gradient to the first maximal element in row-major order (what `np.argmax` "
        "returns). Maps need not be square."
    ),
    stub='''def global_max_pool2d_backward(grad, x):
    """Gradient of y = x.max(axis=(2, 3)); grad is (N, C), x is (N, C, H, W)."""
    raise NotImplementedError
''',
    outputs=("grad_x",),
    gradients=("grad_x",),
    make_cases=_max_cases,
    reference=_max_reference,
    numeric=_max_numeric,
    mistakes=(
        Mistake("spreads the gradient like an average",
                "That is the backward of a mean. A maximum depends on one element only: the "
                "winner receives all of grad, every other element exactly 0.",
                MAX_DOC, _like_an_average),
        Mistake("sends the gradient to every element",
                "Broadcasting grad over the plane says every pixel moves the maximum one for "
                "one; only the winner does. Keep the argmax from the forward pass.",
                MAX_DOC, _to_every_element),
        Mistake("sends the gradient to every tied maximum",
                "The mask x == max has several ones at a tie, so the gradient is counted once "
                "per tied element. PyTorch's max pooling (and CBAM's released code) gives it "
                "to the first maximum only: use np.argmax.", TIES_DOC, _to_every_maximum),
    ),
)

# ---------------------------------------------------------------------------- the channel gate


PARAMS = {"w0": f"{FC_0}.weight", "b0": f"{FC_0}.bias", "w1": f"{FC_1}.weight", "b1": f"{FC_1}.bias"}
GATE_OUTPUTS = ("grad_x", "grad_w0", "grad_b0", "grad_w1", "grad_b1")


def _gate_reference(grad, x, w0, b0, w1, b1):
    params = {PARAMS[key]: value for key, value in zip(("w0", "b0", "w1", "b1"), (w0, b0, w1, b1))}
    _, cache = cbam_forward(x, params, ("avg", "max"), no_spatial=True, training=False)
    grads = cbam_backward(grad, cache)
    return (grads["x"], *(grads[PARAMS[key]] for key in ("w0", "b0", "w1", "b1")))


def _gate_forward(x, w0, b0, w1, b1):
    def mlp(p):
        return np.maximum(p @ w0.T + b0, 0) @ w1.T + b1

    logits = mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3)))
    return x / (1 + np.exp(-logits))[:, :, None, None]


def _gate_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for i in range(5):
        hidden = side(rng, 2, 3)
        c, h = hidden * side(rng, 1, 2), side(rng, 2)
        w = side(rng, 2) if i else h + 1  # the first map is not square
        n = side(rng, 2, 3)
        shape = (n, c, h, w)
        while True:
            args = {"grad": upstream(rng, shape), "x": distinct(rng, shape),
                    "w0": values(rng, (hidden, c)) / np.sqrt(c), "b0": values(rng, (hidden,)),
                    "w1": values(rng, (c, hidden)) / np.sqrt(hidden), "b1": values(rng, (c,))}
            # Redraw until both pools reach a live hidden ReLU: with every unit of one pool's
            # path switched off, that pool's backward is never exercised and a wrong one passes.
            flat = args["x"].reshape(n, c, h * w)
            if all(((p @ args["w0"].T + args["b0"]) > 0).any() for p in (flat.mean(2), flat.max(2))):
                break
        cases.append(Case({"x.shape": shape, "hidden": hidden}, args))
    return cases


def _gate_numeric(case: Case) -> dict[str, np.ndarray]:
    a = case.args
    inputs = {k: a[k] for k in ("x", "w0", "b0", "w1", "b1")}
    return finite_differences(_gate_forward, inputs, a["grad"],
                              {f"grad_{k}": k for k in inputs})


def _gate_by_hand(grad, x, w0, b0, w1, b1, fault=None):
    """The correct backward, or one of the classic mistakes (``fault``)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    winner = flat.argmax(axis=2)
    pools = {"avg": x.mean(axis=(2, 3)), "max": np.take_along_axis(flat, winner[:, :, None], 2)[:, :, 0]}
    z = {k: p @ w0.T + b0 for k, p in pools.items()}
    logits = sum(np.maximum(zk, 0) @ w1.T + b1 for zk in z.values())
    m = 1 / (1 + np.exp(-logits))
    dx = grad * m[:, :, None, None]
    dm = (grad * x).sum(axis=(2, 3))
    dlogits = dm if fault == "no sigmoid" else dm * m * (1 - m)
    grads = {"grad_w0": np.zeros_like(w0), "grad_b0": np.zeros_like(b0),
             "grad_w1": np.zeros_like(w1), "grad_b1": np.zeros_like(b1)}
    for k, p in pools.items():
        hk = np.maximum(z[k], 0)
        dz = (dlogits @ w1) * (z[k] > 0)
        step = {"grad_w1": dlogits.T @ hk, "grad_b1": dlogits.sum(axis=0),
                "grad_w0": dz.T @ p, "grad_b0": dz.sum(axis=0)}
        for name, value in step.items():
            grads[name] = value if fault == "assigns" else grads[name] + value
        dp = dz @ w0
        if fault == "no pool path":
            continue
        if k == "avg" or fault == "max as avg":
            dx = dx + dp[:, :, None, None] / (h * w)
        else:
            dflat = np.zeros((n, c, h * w))
            np.put_along_axis(dflat, winner[:, :, None], dp[:, :, None], axis=2)
            dx = dx + dflat.reshape(x.shape)
    return (dx, grads["grad_w0"], grads["grad_b0"], grads["grad_w1"], grads["grad_b1"])


def _gate_fault(fault: str):
    def wrong(grad, x, w0, b0, w1, b1):
        return _gate_by_hand(grad, x, w0, b0, w1, b1, fault)

    return wrong


CHANNEL_GATE = Exercise(
    name="cbam_channel_gate_backward",
    own=("minibam.manual",),
    title="CBAM's channel gate: one MLP shared by two pools",
    doc=GATE_DOC,
    intro=(
        "CBAM's channel gate pools each channel twice, by average and by maximum, sends both "
        "descriptors through the **same** MLP and scales the input:\n\n"
        "$$\\text{mlp}(p) = \\text{ReLU}(p W_0^\\top + b_0) W_1^\\top + b_1, \\quad "
        "M_c = \\sigma\\big(\\text{mlp}(\\text{avg}(x)) + \\text{mlp}(\\max(x))\\big), \\quad "
        "y = x \\cdot M_c$$\n\n"
        "with avg and max over H and W, $M_c$ of shape (N, C) broadcast over the plane. Write "
        "`cbam_channel_gate_backward(grad, x, w0, b0, w1, b1)` returning "
        "`(grad_x, grad_w0, grad_b0, grad_w1, grad_b1)`. `x` reaches `y` three ways (directly, "
        "through the average, through the maximum), and each weight is used twice. You may "
        "reuse your `global_max_pool2d_backward`."
    ),
    stub='''def cbam_channel_gate_backward(grad, x, w0, b0, w1, b1):
    """Gradients of y = x * sigmoid(mlp(x.mean((2, 3))) + mlp(x.max((2, 3))))[:, :, None, None],
    mlp(p) = relu(p @ w0.T + b0) @ w1.T + b1; grad is dL/dy, (N, C, H, W).

    Returns (grad_x, grad_w0, grad_b0, grad_w1, grad_b1).
    """
    raise NotImplementedError
''',
    outputs=GATE_OUTPUTS,
    gradients=GATE_OUTPUTS,
    make_cases=_gate_cases,
    reference=_gate_reference,
    numeric=_gate_numeric,
    fd_cases=2,
    mistakes=(
        Mistake("weight gradients from the last pool only",
                "The MLP is used once per pool, so its weights' gradients are the sums of the "
                "two uses: add each pool's contribution instead of assigning it.",
                GATE_DOC, _gate_fault("assigns")),
        Mistake("the pooling paths into x left out",
                "x reaches y through M_c too: each pool's gradient dL/dp must go back through "
                "its pooling (dp / (H W) for the average, all of dp to the maximum) and be "
                "added to grad * M_c.", GATE_DOC, _gate_fault("no pool path")),
        Mistake("the sigmoid's derivative missing",
                "M_c = sigmoid(logits): dL/dlogits = dL/dM_c * M_c * (1 - M_c).",
                "derivations/activations.md#sigmoid", _gate_fault("no sigmoid")),
        Mistake("the max pool's gradient spread like an average",
                "The max pool sends all of its dL/dp to the winning pixel of each plane, not "
                "dp / (H W) to every pixel.", MAX_DOC, _gate_fault("max as avg")),
    ),
)
