"""Exercises 9-10: batch norm in training mode, its backward and its running statistics.
Derivation: docs/derivations/batchnorm.md."""

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
from minibam.ops.norm import BatchNorm

TRAINING_DOC = "derivations/batchnorm.md#training-mode-backward"
RUNNING_DOC = "derivations/batchnorm.md#running-statistics"


def _shapes(rng: np.random.Generator, count: int) -> list[tuple]:
    shapes = [(4, 3), (2, 2, 3, 2)]  # (N, C) as in BAM's channel branch, and (N, C, H, W)
    while len(shapes) < count:
        shapes.append((side(rng, 2), side(rng)) if rng.random() < 0.5
                      else (side(rng), side(rng), side(rng, 2), side(rng)))
    return shapes


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0, *range(2, x.ndim))


def _per_channel(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


# ---------------------------------------------------------------------------- backward


def _backward_reference(grad, x, gamma, eps):
    ctx = Context((True, True, True))
    BatchNorm.forward(ctx, x, gamma, np.zeros_like(gamma), None, None, True, 0.1, eps, x.dtype)
    return BatchNorm.backward(ctx, grad)


def _backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape in _shapes(rng, 6):
        c = shape[1]
        cases.append(Case({"x.shape": shape, "eps": 1e-5},
                          {"grad": upstream(rng, shape), "x": values(rng, shape),
                           "gamma": rng.uniform(0.5, 1.5, c), "eps": 1e-5}))
    return cases


def _backward_numeric(case: Case) -> dict[str, np.ndarray]:
    a = case.args

    def forward(x, gamma, beta):
        return BatchNorm.forward(Context((False,) * 3), x, gamma, beta, None, None, True, 0.1, a["eps"], x.dtype)

    inputs = {"x": a["x"], "gamma": a["gamma"], "beta": np.zeros_like(a["gamma"])}
    return finite_differences(forward, inputs, a["grad"],
                              {"grad_x": "x", "grad_gamma": "gamma", "grad_beta": "beta"})


def _by_hand(grad, x, gamma, eps, mean_terms=True, variance_term=True, unbiased=False,
             consistent=False):
    """The training-mode backward; the flags make the catalogued mistakes. ``unbiased``
    normalises with v * m/(m-1); ``consistent`` also differentiates that forward exactly
    (its variance term divides by m - 1), the mistake made carefully."""
    axes = _axes(x)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True) * (m / (m - 1) if unbiased else 1)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    g = grad * _per_channel(gamma, x)
    dgamma, dbeta = (grad * x_hat).sum(axis=axes), grad.sum(axis=axes)
    if not mean_terms:
        return g * inv_std, dgamma, dbeta
    dx = g - g.mean(axis=axes, keepdims=True)
    if variance_term:
        share = (g * x_hat).sum(axis=axes, keepdims=True) / (m - 1 if consistent else m)
        dx = dx - x_hat * share
    return dx * inv_std, dgamma, dbeta


def _fault(**fault: bool):
    def wrong(grad, x, gamma, eps):
        return _by_hand(grad, x, gamma, eps, **fault)

    return wrong


BACKWARD = Exercise(
    name="batch_norm_backward",
    own=("minibam.ops.norm:BatchNorm", "minibam.manual"),
    title="Batch norm backward in training mode",
    doc=TRAINING_DOC,
    intro=(
        "In training, batch norm normalises each channel with its batch mean $\\mu$ and "
        "**biased** variance $v$: $\\hat x = (x - \\mu)/\\sqrt{v + \\epsilon}$, "
        "$y = \\gamma \\hat x + \\beta$, over the $m$ values of a channel (axes 0, 2, 3 of "
        "(N, C, H, W), or axis 0 of (N, C)). Since $\\mu$ and $v$ depend on every $x$, the "
        "gradient has three paths. Write `batch_norm_backward(grad, x, gamma, eps)` returning "
        "`(grad_x, grad_gamma, grad_beta)`. A test with `y.sum()` as the loss would pass "
        "almost anything here; the checker always uses a random upstream gradient."
    ),
    stub='''def batch_norm_backward(grad, x, gamma, eps):
    """Gradients of training-mode batch norm y = gamma * x_hat + beta (per channel, axis 1).

    x: (N, C) or (N, C, H, W); gamma: (C,). Returns (grad_x, grad_gamma, grad_beta).
    """
    raise NotImplementedError
''',
    outputs=("grad_x", "grad_gamma", "grad_beta"),
    gradients=("grad_x", "grad_gamma", "grad_beta"),
    make_cases=_backward_cases,
    reference=_backward_reference,
    numeric=_backward_numeric,
    mistakes=(
        Mistake("no mean terms (the evaluation-mode backward)",
                "In training mu and v depend on every x of the channel: subtract the mean of "
                "gamma*grad and the variance term. (With a sum() loss this mistake passes: "
                "the true gradient is then exactly zero.)", TRAINING_DOC, _fault(mean_terms=False)),
        Mistake("variance path dropped",
                "v depends on x too: subtract x_hat * mean(gamma*grad * x_hat) as well as the mean.",
                TRAINING_DOC, _fault(variance_term=False)),
        Mistake("normalises with the unbiased variance",
                "The batch is normalised with the biased variance (divided by m); the unbiased "
                "one (m - 1) is only for the running statistics.", "derivations/batchnorm.md#forward",
                _fault(unbiased=True)),
    ),
)

# ---------------------------------------------------------------------------- running statistics


def _running_reference(x, running_mean, running_var, momentum):
    mean, var = running_mean.copy(), running_var.copy()
    BatchNorm.forward(Context((False,) * 3), x, None, None, mean, var, True, momentum, 1e-5, x.dtype)
    return mean, var


def _running_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape in _shapes(rng, 6):
        c = shape[1]
        momentum = 0.1 if not cases else float(rng.choice([0.1, 0.3, 0.01]))
        cases.append(Case({"x.shape": shape, "momentum": momentum},
                          {"x": values(rng, shape), "running_mean": 0.2 * rng.standard_normal(c),
                           "running_var": rng.uniform(0.5, 2.0, c), "momentum": momentum}))
    return cases


def _running_by_hand(x, running_mean, running_var, momentum, old_weight=False, biased=False,
                     batch_count=False, in_place=False, var_in_place=False):
    axes = _axes(x)
    m = x.shape[0] if batch_count else x.size // x.shape[1]
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    if not biased:
        var = var * m / (m - 1)
    p = 1 - momentum if old_weight else momentum
    if in_place:
        running_mean *= 1 - p
        running_mean += p * mu
        running_var *= 1 - p
        running_var += p * var
        return running_mean, running_var
    if var_in_place:  # the mean as a new array, the variance updated in the caller's array
        running_var *= 1 - p
        running_var += p * var
        return (1 - p) * running_mean + p * mu, running_var
    return (1 - p) * running_mean + p * mu, (1 - p) * running_var + p * var


def _running_fault(**fault: bool):
    def wrong(x, running_mean, running_var, momentum):
        return _running_by_hand(x, running_mean, running_var, momentum, **fault)

    return wrong


RUNNING = Exercise(
    name="batch_norm_running_stats",
    own=("minibam.ops.norm:BatchNorm",),
    title="Batch norm's running statistics",
    doc=RUNNING_DOC,
    intro=(
        "Each training step also updates the running estimates used in evaluation, with "
        "momentum $p$ (PyTorch's convention): $r_\\mu \\leftarrow (1 - p) r_\\mu + p \\mu$ and "
        "$r_v \\leftarrow (1 - p) r_v + p \\frac{m}{m-1} v$. Write "
        "`batch_norm_running_stats(x, running_mean, running_var, momentum)` returning the new "
        "`(running_mean, running_var)` as new arrays, leaving the arguments unchanged."
    ),
    stub='''def batch_norm_running_stats(x, running_mean, running_var, momentum):
    """The running mean and variance after one training step on x ((N, C) or (N, C, H, W)).

    Returns (new_running_mean, new_running_var); the arguments are left unchanged.
    """
    raise NotImplementedError
''',
    outputs=("running_mean", "running_var"),
    make_cases=_running_cases,
    reference=_running_reference,
    mistakes=(
        Mistake("momentum weights the old value",
                "In PyTorch momentum is the weight of the new batch: with p = 0.1 the batch "
                "contributes 10%, the old estimate 90%.", RUNNING_DOC, _running_fault(old_weight=True)),
        Mistake("tracks the biased variance",
                "Normalise with the biased variance, but track the unbiased one, v * m/(m-1).",
                RUNNING_DOC, _running_fault(biased=True)),
        Mistake("m counts only the batch",
                "For (N, C, H, W) input a channel has m = N*H*W values, not N; the unbiased "
                "factor is m/(m-1) with that m.", "derivations/batchnorm.md#forward",
                _running_fault(batch_count=True)),
        Mistake("updates the buffers in place",
                "Here the function returns new arrays and leaves its arguments alone "
                "(F.batch_norm updates a module's buffers in place by design, but the caller "
                "of this function still needs the old values).", RUNNING_DOC,
                _running_fault(in_place=True)),
        Mistake("updates the running variance in place (the mean as a new array)",
                "`running_var *= 1 - p` changes the caller's array; compute the new variance as a "
                "new array, as you did for the mean: (1 - p) * running_var + p * v_unbiased.",
                RUNNING_DOC, _running_fault(var_in_place=True)),
        Mistake("momentum weights the old value, and the biased variance is tracked",
                "Two mistakes at once: with p = 0.1 the batch contributes 10% (PyTorch's "
                "momentum), and the running variance tracks the unbiased v * m/(m-1).",
                RUNNING_DOC, _running_fault(old_weight=True, biased=True)),
    ),
)
