"""mb.optim.SGD and mb.optim.Adam against torch.optim: several steps on the same
parameters and gradients, float64, tight tolerance; plus skipping, dtypes, mutation
rules and hyper-parameter validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minibam as mb
from minibam import optim

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,), ()]


def _compare(make_ours, make_theirs, steps=5, seed=0, skip=None, dtype=np.float64, tol=None):
    """Run both optimizers on the same start values and the same gradient sequence.

    ``skip`` = (step, param index): that parameter has no gradient at that step.
    """
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [mb.Tensor(a, requires_grad=True) for a in start]
    theirs = [torch.tensor(a, requires_grad=True) for a in start]
    opt, topt = make_ours(ours), make_theirs(theirs)
    for step in range(steps):
        opt.zero_grad()
        topt.zero_grad()
        for i, (p, tp) in enumerate(zip(ours, theirs, strict=True)):
            if skip == (step, i):
                continue
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = g
            tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(
                p.data, tp.detach().numpy(), **(tol or {"rtol": 1e-12, "atol": 1e-14}),
                err_msg=f"after step {step}",
            )
            assert p.data.dtype == dtype
    return ours


SGD_CONFIGS = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    {"lr": 0.02, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.1},
    {"lr": 0.02, "momentum": 0.7, "nesterov": True, "weight_decay": 0.05},
]


@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_sgd_matches_torch(config):
    _compare(lambda ps: optim.SGD(ps, **config), lambda ps: torch.optim.SGD(ps, **config))


ADAM_CONFIGS = [
    {},
    {"lr": 0.01},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.003, "betas": (0.0, 0.5), "weight_decay": 0.01},
]


@pytest.mark.parametrize("config", ADAM_CONFIGS)
def test_adam_matches_torch(config):
    _compare(lambda ps: optim.Adam(ps, **config), lambda ps: torch.optim.Adam(ps, **config))


@given(
    lr=st.floats(0.0, 1.0),
    momentum=st.floats(0.0, 0.99),
    dampening=st.floats(0.0, 1.0),
    weight_decay=st.floats(0.0, 0.5),
    nesterov=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sgd_matches_torch_hypothesis(lr, momentum, dampening, weight_decay, nesterov, seed):
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    config = {"lr": lr, "momentum": momentum, "dampening": dampening,
              "weight_decay": weight_decay, "nesterov": nesterov}
    _compare(lambda ps: optim.SGD(ps, **config), lambda ps: torch.optim.SGD(ps, **config),
             steps=4, seed=seed)


@given(
    lr=st.floats(1e-4, 0.1),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.5, 0.9999),
    eps=st.sampled_from([1e-8, 1e-6, 1e-3]),
    weight_decay=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_adam_matches_torch_hypothesis(lr, beta1, beta2, eps, weight_decay, seed):
    config = {"lr": lr, "betas": (beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    _compare(lambda ps: optim.Adam(ps, **config), lambda ps: torch.optim.Adam(ps, **config),
             steps=4, seed=seed)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
        (lambda ps: optim.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    ],
)
def test_params_without_grad_are_skipped_like_torch(ours, theirs):
    # Parameter 1 has no gradient at step 2: it must not move, and (Adam) its step
    # count and (SGD) its momentum buffer must not advance, exactly as in PyTorch.
    _compare(ours, theirs, steps=5, skip=(2, 1))


def test_param_that_never_gets_a_grad_is_untouched():
    p, q = mb.Tensor(np.ones(3), requires_grad=True), mb.Tensor(np.ones(2), requires_grad=True)
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    np.testing.assert_array_equal(q.data, 1.0)
    assert not np.allclose(p.data, 1.0)


@pytest.mark.parametrize(
    "make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
             lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.1)],
)
def test_float32_params_stay_float32_and_match_torch(make):
    config = make([mb.Tensor(np.ones(1), requires_grad=True)]).defaults
    torch_cls = getattr(torch.optim, "SGD" if "momentum" in config else "Adam")
    _compare(make, lambda ps: torch_cls(ps, **config), dtype=np.float32,
             tol={"rtol": 1e-5, "atol": 1e-6})


def test_no_caller_array_or_grad_is_mutated():
    data, grad = np.arange(4.0), np.full(4, 0.5)
    p = mb.Tensor(data, requires_grad=True)
    p.grad = grad
    optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1).step()
    np.testing.assert_array_equal(data, np.arange(4.0))
    np.testing.assert_array_equal(grad, 0.5)
    np.testing.assert_allclose(p.data, data - 0.1 * (grad + 0.1 * data), rtol=1e-15)


def test_trains_with_real_backward():
    # Minimise ||W x - t||^2 for one W: the loss must fall steadily.
    rng = np.random.default_rng(0)
    x, t = mb.Tensor(rng.standard_normal((8, 3))), mb.Tensor(rng.standard_normal((8, 2)))
    w = mb.Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    opt = optim.Adam([w], lr=0.05)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = ((x @ w - t) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_zero_grad():
    p = mb.Tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, 0.0)
    opt.zero_grad()
    assert p.grad is None


def test_step_with_closure_returns_loss():
    p = mb.Tensor(np.array([2.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 4.0
    np.testing.assert_allclose(p.data, [2.0 - 0.25 * 4.0])


def test_repr_names_hyper_parameters():
    r = repr(optim.SGD([mb.Tensor(np.ones(2), requires_grad=True)], lr=0.1, momentum=0.9))
    assert r.startswith("SGD(1 parameters") and "momentum=0.9" in r


def test_validation():
    ps = [mb.Tensor(np.ones(2), requires_grad=True)]
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(ps, lr=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(ps, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.SGD(ps, lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(ps, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(TypeError, match="lr must be a real number|learning rate"):
        optim.SGD(ps, lr="0.1")
    with pytest.raises(ValueError, match="learning rate"):
        optim.Adam(ps, lr=-1e-3)
    with pytest.raises(ValueError, match="epsilon"):
        optim.Adam(ps, eps=-1.0)
    with pytest.raises(ValueError, match="beta parameter at index 0"):
        optim.Adam(ps, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        optim.Adam(ps, betas=(0.9, -0.1))
    with pytest.raises(TypeError, match="pair"):
        optim.Adam(ps, betas=0.9)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.Adam(ps, weight_decay=-0.1)


def test_params_validation():
    p = mb.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(3, lr=0.1)
    with pytest.raises(TypeError, match=r"params\[1\] must be a minibam Tensor.*ndarray"):
        optim.Adam([p, np.ones(2)])
    with pytest.raises(ValueError, match="more than once"):
        optim.Adam([p, p])
    with pytest.raises(ValueError, match="not a leaf"):
        optim.Adam([p * 2.0])
    # Generators (model.parameters()) are consumed once and kept as a list.
    opt = optim.SGD((q for q in [p]), lr=0.1)
    assert opt.params == [p]


NONFINITE_GRADS = [np.array([np.inf, -np.inf, np.nan, 1.0]), np.array([1e308, -1e308, 0.0, 1.0])]


@pytest.mark.parametrize("grad", NONFINITE_GRADS, ids=["inf-nan", "overflowing"])
@pytest.mark.parametrize(
    "make",
    [lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
     lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
     lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01),
     lambda ps: optim.Adam(ps, lr=0.1), lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.01)],
    ids=["sgd", "momentum", "nesterov-decay", "dampening-decay", "adam", "adam-decay"],
)
def test_inf_and_nan_gradients_are_silent_and_give_torchs_values(make, grad):
    # The warning policy (docs/guarantees.md): inf and nan come back as values, silently,
    # as in PyTorch, even under -W error.
    start = np.array([1.0, 2.0, 3.0, 1e308])
    ours = mb.Tensor(start, requires_grad=True)
    theirs = torch.tensor(start, requires_grad=True)
    opt = make([ours])
    topt = _torch_twin(opt, [theirs])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            ours.grad = grad.copy()
            theirs.grad = torch.tensor(grad)
            opt.step()
            topt.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, equal_nan=True)


def _torch_twin(opt, params):
    """The torch.optim optimizer with ``opt``'s hyper-parameters."""
    if isinstance(opt, optim.Adam):
        return torch.optim.Adam(params, **opt.defaults)
    return torch.optim.SGD(params, **opt.defaults)


@pytest.mark.parametrize(
    "bad, error, match",
    [(np.ones(2), ValueError, r"params\[1\]\.grad has shape \(2,\), expected the parameter's \(3,\)"),
     (np.ones((3, 1)), ValueError, r"params\[1\]\.grad has shape \(3, 1\)"),
     (np.array(["a", "b", "c"]), TypeError, r"params\[1\]\.grad must hold real numbers.*<U1"),
     (np.ones(3, complex), TypeError, r"params\[1\]\.grad must hold real numbers.*complex"),
     ("abc", TypeError, r"params\[1\]\.grad must be an array")],
)
@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1)], ids=["sgd", "adam"])
def test_a_bad_gradient_is_refused_naming_it_before_any_parameter_moves(make, bad, error, match):
    params = [mb.Tensor(np.ones(2), requires_grad=True), mb.Tensor(np.ones(3), requires_grad=True)]
    opt = make(params)
    params[0].grad, params[1].grad = np.ones(2), bad
    with pytest.raises(error, match=f"{type(opt).__name__}.step: " + match):
        opt.step()
    assert all((p.data == 1).all() for p in params) and opt.state == [{}, {}]


def test_zero_grad_keeping_arrays_works_for_a_scalar_parameter_and_a_read_only_grad():
    p = mb.Tensor(2.0, requires_grad=True)
    (p * p).backward()  # a 0-d parameter's gradient
    q = mb.Tensor(np.ones(3), requires_grad=True)
    q.grad = np.broadcast_to(np.ones(1), (3,))  # read-only, as a user might set it
    opt = optim.SGD([p, q], lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert np.shape(p.grad) == () and p.grad == 0
    assert q.grad.shape == (3,) and not q.grad.any()
