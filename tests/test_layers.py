"""The layers (minibam/nn/layers.py, init.py) against the same torch.nn modules.

Each comparison copies the minibam layer's state into the torch layer (so the
state_dict path is exercised too), runs both in float64 with one random upstream
gradient, and compares the output, dL/dx, the gradient of every parameter and,
for batch norm, the running buffers and num_batches_tracked after every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import random_upstream, seeds

import minibam as mb
from minibam import nn

torch = pytest.importorskip("torch")
tnn = torch.nn

RTOL, ATOL = 1e-10, 1e-12


# ------------------------------------------------------------------ helpers
def randomise(module: nn.Module, seed: int) -> None:
    """Random parameters and running statistics (a default BatchNorm has gamma = 1 and
    beta = 0, which would hide a backward that mixes them up)."""
    rng = np.random.default_rng(seed)
    state = module.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(rng.integers(0, 5))
        elif key.endswith("running_var") or (key.endswith("weight") and value.ndim == 1):
            state[key] = rng.uniform(0.5, 1.5, value.shape)
        else:
            state[key] = rng.standard_normal(value.shape)
    module.load_state_dict(state)


def twin(ours: nn.Module, theirs: Any) -> Any:
    """``theirs`` in float64 holding ``ours``'s state, in the same mode."""
    theirs = theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return theirs.train(ours.training)


def step(ours: nn.Module, theirs: Any, x: np.ndarray, seed: int) -> None:
    """One forward and backward on both sides; assert everything observable agrees."""
    ours.zero_grad()
    theirs.zero_grad()
    x_before = x.copy()
    xm = mb.Tensor(x, requires_grad=True)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y, yt = ours(xm), theirs(xt)
    upstream = random_upstream(y.shape, seed)
    y.backward(upstream)
    yt.backward(torch.from_numpy(upstream))

    np.testing.assert_array_equal(x, x_before, err_msg="the caller's array changed")
    np.testing.assert_array_equal(xm.data, x_before, err_msg="the input tensor changed")
    assert y.shape == tuple(yt.shape) and y.dtype == np.float64
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg="forward")
    np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg="dL/dx")
    ref_params = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(ref_params)
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        np.testing.assert_allclose(p.grad, ref_params[name].grad.numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"dL/d{name}")
    ref_state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        np.testing.assert_allclose(value, ref_state[key].numpy(), rtol=RTOL, atol=ATOL, err_msg=key)
        assert value.dtype == ref_state[key].numpy().dtype, key


# ------------------------------------------------------------------- Linear
@given(
    lead=st.lists(st.integers(1, 3), max_size=2),
    in_features=st.integers(1, 5),
    out_features=st.integers(1, 5),
    bias=st.booleans(),
    seed=seeds(),
)
def test_linear_matches_torch(lead: list[int], in_features: int, out_features: int, bias: bool,
                              seed: int) -> None:
    ours = nn.Linear(in_features, out_features, bias=bias)
    randomise(ours, seed)
    theirs = twin(ours, tnn.Linear(in_features, out_features, bias=bias))
    x = np.random.default_rng(seed).standard_normal((*lead, in_features))
    step(ours, theirs, x, seed)


# ------------------------------------------------------------------- Conv2d
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    padding=st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))),
    dilation=st.one_of(st.integers(1, 2), st.tuples(st.integers(1, 2), st.integers(1, 2))),
    bias=st.booleans(),
    seed=seeds(),
)
def test_conv2d_matches_torch(n: int, c: int, o: int, hw: tuple[int, int], kernel: tuple[int, int],
                              stride: Any, padding: Any, dilation: Any, bias: bool, seed: int) -> None:
    pad = padding if isinstance(padding, tuple) else (padding, padding)
    dil = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    for size, k, p, d in zip(hw, kernel, pad, dil, strict=True):
        assume(size + 2 * p - d * (k - 1) >= 1)
    kernel_size = kernel[0] if kernel[0] == kernel[1] else kernel
    args = (c, o, kernel_size)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, bias=bias)
    ours = nn.Conv2d(*args, **kwargs)
    randomise(ours, seed)
    theirs = twin(ours, tnn.Conv2d(*args, **kwargs))
    step(ours, theirs, np.random.default_rng(seed).standard_normal((n, c, *hw)), seed)


def test_conv2d_keeps_hyper_parameters_as_pairs() -> None:
    conv = nn.Conv2d(2, 3, 3, stride=(1, 2), padding=1, dilation=2)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 2)
    assert conv.padding == (1, 1) and conv.dilation == (2, 2)
    assert conv.weight.shape == (3, 2, 3, 3) and conv.bias.shape == (3,)
    assert nn.Conv2d(2, 3, (1, 2), bias=False).bias is None


# ---------------------------------------------------------------- BatchNorm
BN_CASES = {
    "1d": (nn.BatchNorm1d, tnn.BatchNorm1d, 2),
    "1d-seq": (nn.BatchNorm1d, tnn.BatchNorm1d, 3),  # (N, C, L), as PyTorch accepts
    "2d": (nn.BatchNorm2d, tnn.BatchNorm2d, 4),
}


@settings(max_examples=15)
@given(
    case=st.sampled_from(sorted(BN_CASES)),
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    spatial=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    momentum=st.sampled_from([0.1, 0.5, 1.0, 0.0, None]),
    eps=st.sampled_from([1e-5, 1e-2]),
    seed=seeds(),
)
def test_batchnorm_train_then_eval_matches_torch(
    case: str, n: int, c: int, spatial: tuple[int, int], momentum: float | None, eps: float, seed: int
) -> None:
    ours_cls, torch_cls, ndim = BN_CASES[case]
    shape = (n, c, *spatial)[:ndim]
    assume(int(np.prod(shape)) // c > 1)  # training needs more than one value per channel
    ours = ours_cls(c, eps=eps, momentum=momentum)
    randomise(ours, seed)
    theirs = twin(ours, torch_cls(c, eps=eps, momentum=momentum))
    rng = np.random.default_rng(seed)
    for i in range(3):  # buffers and counter are compared after every step
        step(ours, theirs, rng.normal(2.0, 3.0, shape), seed + i)
    ours.eval()
    theirs.eval()
    frozen = ours.state_dict()
    step(ours, theirs, rng.normal(-1.0, 2.0, shape), seed + 3)
    for key, value in ours.state_dict().items():  # evaluation never touches the state
        np.testing.assert_array_equal(value, frozen[key], err_msg=key)


@pytest.mark.parametrize("affine, track", [(False, True), (True, False), (False, False)])
def test_batchnorm_options_match_torch(affine: bool, track: bool) -> None:
    ours = nn.BatchNorm2d(3, affine=affine, track_running_stats=track)
    theirs = twin(ours, tnn.BatchNorm2d(3, affine=affine, track_running_stats=track))
    rng = np.random.default_rng(5)
    step(ours, theirs, rng.standard_normal((2, 3, 2, 3)), 0)
    ours.eval()
    theirs.eval()  # without running statistics, evaluation uses the batch's own
    step(ours, theirs, rng.standard_normal((2, 3, 2, 3)), 1)


def test_batchnorm_momentum_none_is_a_cumulative_average() -> None:
    bn = nn.BatchNorm1d(2, momentum=None)
    rng = np.random.default_rng(0)
    batches = [rng.normal(k, 1.0 + k, (3 + k, 2)) for k in range(4)]
    for x in batches:
        bn(mb.Tensor(x))
    np.testing.assert_allclose(bn.running_mean.data, np.mean([x.mean(0) for x in batches], axis=0),
                               rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.data,
                               np.mean([x.var(0, ddof=1) for x in batches], axis=0), rtol=1e-12)
    assert bn.num_batches_tracked == 4


def test_batchnorm_momentum_weights_the_new_batch() -> None:
    bn = nn.BatchNorm2d(1, momentum=0.1)
    x = np.arange(8.0).reshape(2, 1, 2, 2)
    y = bn(mb.Tensor(x))
    np.testing.assert_allclose(bn.running_mean.data, [0.1 * x.mean()], rtol=1e-14)
    np.testing.assert_allclose(bn.running_var.data, [0.9 + 0.1 * x.var(ddof=1)], rtol=1e-14)
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-5)  # the biased variance normalises
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)


def test_batchnorm_refused_batch_changes_nothing() -> None:
    bn = nn.BatchNorm1d(3)
    randomise(bn, 1)
    before = bn.state_dict()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(mb.Tensor(np.ones((1, 3))))
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    bn.eval()
    assert bn(mb.Tensor(np.ones((1, 3)))).shape == (1, 3)  # a batch of one is fine in eval


def test_batchnorm_initial_state_equals_torch() -> None:
    for ours, theirs in ((nn.BatchNorm1d(4), tnn.BatchNorm1d(4)), (nn.BatchNorm2d(2), tnn.BatchNorm2d(2))):
        ref = {k: v.numpy() for k, v in theirs.double().state_dict().items()}
        state = ours.state_dict()
        assert list(state) == list(ref)
        for key in state:
            assert state[key].dtype == ref[key].dtype, key
            np.testing.assert_array_equal(state[key], ref[key], err_msg=key)


# ------------------------------------------------- ReLU, Sigmoid, Flatten
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=4).map(tuple),
    which=st.sampled_from(["relu", "sigmoid", "flatten", "flatten_0_1", "flatten_-2"]),
    seed=seeds(),
)
def test_parameterless_layers_match_torch(shape: tuple[int, ...], which: str, seed: int) -> None:
    pairs = {
        "relu": (nn.ReLU(), tnn.ReLU()),
        "sigmoid": (nn.Sigmoid(), tnn.Sigmoid()),
        "flatten": (nn.Flatten(), tnn.Flatten()),
        "flatten_0_1": (nn.Flatten(0, 1), tnn.Flatten(0, 1)),
        "flatten_-2": (nn.Flatten(start_dim=-2), tnn.Flatten(start_dim=-2)),
    }
    assume(not which.startswith("flatten") or len(shape) >= 2)
    ours, theirs = pairs[which]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 4
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink
    step(ours, theirs, x, seed)
    assert list(ours.parameters()) == [] and ours.state_dict() == {}


def test_sigmoid_layer_is_stable_for_large_inputs() -> None:
    with np.errstate(all="raise"):
        y = nn.Sigmoid()(mb.Tensor([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(y.data, [0.0, 0.5, 1.0])


# ---------------------------------------------------------- composite model
def test_composite_model_matches_torch_and_finite_differences() -> None:
    def pair() -> tuple[nn.Module, Any]:
        ours = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                             nn.Flatten(), nn.Linear(3 * 3 * 3, 4), nn.BatchNorm1d(4), nn.Sigmoid())
        theirs = tnn.Sequential(tnn.Conv2d(2, 3, 3, padding=1), tnn.BatchNorm2d(3), tnn.ReLU(),
                                tnn.Flatten(), tnn.Linear(3 * 3 * 3, 4), tnn.BatchNorm1d(4), tnn.Sigmoid())
        return ours, theirs

    ours, theirs = pair()
    randomise(ours, 3)
    theirs = twin(ours, theirs)
    x = np.random.default_rng(3).standard_normal((3, 2, 3, 3))
    step(ours, theirs, x, 3)
    ours.eval()
    theirs.eval()
    step(ours, theirs, x, 4)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        assert mb.gradcheck(lambda t: ours(t), [mb.Tensor(x, requires_grad=True)])


# ------------------------------------------------------- float32 everywhere
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(4, 3), (5, 4)),
        (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=2), (2, 2, 5, 5)),
        (lambda: nn.BatchNorm1d(3), (4, 3)),
        (lambda: nn.BatchNorm2d(2), (2, 2, 3, 3)),
        (nn.ReLU, (2, 3)),
        (nn.Sigmoid, (2, 3)),
        (nn.Flatten, (2, 3, 2)),
    ],
)
def test_float32_layer_stays_float32(make: Any, shape: tuple[int, ...]) -> None:
    wide = make()
    randomise(wide, 0)
    narrow = make()
    narrow.load_state_dict(wide.state_dict())
    narrow.float()
    x = np.random.default_rng(0).standard_normal(shape)
    results = {}
    for module, dtype in ((wide, np.float64), (narrow, np.float32)):
        xt = mb.Tensor(x.astype(dtype), requires_grad=True)
        y = module(xt)
        y.backward(random_upstream(y.shape, 0, dtype))  # the same values, rounded
        assert y.dtype == dtype and xt.grad.dtype == dtype
        assert all(p.grad.dtype == dtype for p in module.parameters())
        assert all(b.dtype in (dtype, np.int64) for b in module.buffers())
        results[dtype] = [y.data, xt.grad, *(p.grad for p in module.parameters()),
                          *module.state_dict().values()]
    for a, b in zip(results[np.float64], results[np.float32], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_no_grad_records_nothing() -> None:
    layer = nn.Linear(3, 2)
    with mb.no_grad():
        y = layer(mb.Tensor(np.ones((2, 3)), requires_grad=True))
    assert not y.requires_grad and y.grad_fn is None


# ------------------------------------------------------------ initialisation
def assert_uniform(values: np.ndarray, bound: float) -> None:
    """Every value in [-bound, bound], the whole range used, flat histogram."""
    values = values.ravel()
    assert np.all(np.abs(values) <= bound)
    assert values.max() > 0.98 * bound and values.min() < -0.98 * bound
    sigma = bound / np.sqrt(3)  # the standard deviation of U(-b, b)
    assert abs(values.mean()) < 5 * sigma / np.sqrt(values.size)
    assert abs(values.std() / sigma - 1) < 0.05
    counts, _ = np.histogram(values, bins=8, range=(-bound, bound))
    expected = values.size / 8
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected)), counts


def test_linear_default_init_is_pytorchs() -> None:
    mb.manual_seed(0)
    layer = nn.Linear(64, 400)
    bound = 1 / np.sqrt(64)
    assert_uniform(layer.weight.data, bound)
    assert_uniform(layer.bias.data, bound)
    torch.manual_seed(0)
    ref = tnn.Linear(64, 400)
    ref_w = ref.weight.detach().numpy()
    assert np.abs(ref_w).max() <= bound  # PyTorch's bound is the same ...
    assert abs(layer.weight.data.std() / ref_w.std() - 1) < 0.05  # ... and so is the spread


def test_conv2d_default_init_is_pytorchs() -> None:
    mb.manual_seed(1)
    conv = nn.Conv2d(4, 128, (3, 5))
    bound = 1 / np.sqrt(4 * 3 * 5)  # fan_in = in_channels * kH * kW
    assert_uniform(conv.weight.data, bound)
    assert np.all(np.abs(conv.bias.data) <= bound) and np.abs(conv.bias.data).max() > 0.8 * bound
    torch.manual_seed(1)
    ref_w = tnn.Conv2d(4, 128, (3, 5)).weight.detach().numpy()
    assert np.abs(ref_w).max() <= bound
    assert abs(conv.weight.data.std() / ref_w.std() - 1) < 0.05


def test_manual_seed_makes_initialisation_reproducible() -> None:
    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(3, 4), nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Linear(4, 1))

    mb.manual_seed(1234)
    first = make().state_dict()
    mb.manual_seed(1234)
    again = make().state_dict()
    mb.manual_seed(1235)
    other = make().state_dict()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
        if key.endswith(("weight", "bias")) and not key.startswith("2."):
            assert not np.any(first[key] == other[key]), key
    mb.manual_seed(1234)
    a, b = nn.Linear(3, 4), nn.Linear(3, 4)
    assert not np.array_equal(a.weight.data, b.weight.data)  # one stream, not one draw per layer
    with pytest.raises(TypeError):
        mb.manual_seed("1234")


# -------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda: nn.Linear(0, 3), ValueError, "in_features"),
        (lambda: nn.Linear(3, -1), ValueError, "out_features"),
        (lambda: nn.Linear(2.5, 3), (TypeError, ValueError), "in_features"),
        (lambda: nn.Linear(True, 3), (TypeError, ValueError), "in_features"),
        (lambda: nn.Conv2d(0, 3, 3), ValueError, "in_channels"),
        (lambda: nn.Conv2d(2, 3, 0), ValueError, "kernel_size"),
        (lambda: nn.Conv2d(2, 3, (3, 3, 3)), ValueError, "kernel_size"),
        (lambda: nn.Conv2d(2, 3, "3"), TypeError, "kernel_size"),
        (lambda: nn.Conv2d(2, 3, 3, stride=0), ValueError, "stride"),
        (lambda: nn.Conv2d(2, 3, 3, padding=-1), ValueError, "padding"),
        (lambda: nn.Conv2d(2, 3, 3, padding="same"), TypeError, "padding"),
        (lambda: nn.Conv2d(2, 3, 3, dilation=(1, 0)), ValueError, "dilation"),
        (lambda: nn.Conv2d(2, 3, 1.5), TypeError, "kernel_size"),
        (lambda: nn.BatchNorm1d(0), ValueError, "num_features"),
        (lambda: nn.BatchNorm2d(3, eps=0.0), ValueError, "eps"),
        (lambda: nn.BatchNorm2d(3, eps=-1e-5), ValueError, "eps"),
        (lambda: nn.BatchNorm2d(3, eps="1e-5"), TypeError, "eps"),
        (lambda: nn.BatchNorm1d(3, momentum=1.5), ValueError, "momentum"),
        (lambda: nn.BatchNorm1d(3, momentum="0.1"), TypeError, "momentum"),
    ],
)
def test_bad_constructor_arguments(make: Any, error: Any, words: str) -> None:
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize(
    "layer, x, error, words",
    [
        (lambda: nn.Linear(3, 2), np.ones((2, 3)), TypeError, "Tensor"),
        (lambda: nn.Linear(3, 2), mb.Tensor(np.ones((2, 4))), ValueError, r"\(2, 4\)"),
        (lambda: nn.Conv2d(2, 3, 3), mb.Tensor(np.ones((2, 2, 5))), ValueError, r"\(2, 2, 5\)"),
        (lambda: nn.Conv2d(2, 3, 3), mb.Tensor(np.ones((1, 4, 5, 5))), ValueError, "4 channels"),
        (lambda: nn.Conv2d(2, 3, 3, dilation=2), mb.Tensor(np.ones((1, 2, 4, 9))), ValueError, "empty output"),
        (lambda: nn.BatchNorm1d(3), mb.Tensor(np.ones((4, 5))), ValueError, "num_features=3"),
        (lambda: nn.BatchNorm1d(3), mb.Tensor(np.ones((4, 3, 2, 2))), ValueError, r"\(4, 3, 2, 2\)"),
        (lambda: nn.BatchNorm2d(3), mb.Tensor(np.ones((4, 3))), ValueError, r"\(4, 3\)"),
        (lambda: nn.BatchNorm2d(3), mb.Tensor(np.ones((2, 2, 2, 2))), ValueError, "2 channels"),
        (lambda: nn.BatchNorm2d(3), [[1.0, 2.0, 3.0]], TypeError, "Tensor"),
        (nn.ReLU, np.ones(3), TypeError, "Tensor"),
        (nn.Sigmoid, 1.0, TypeError, "Tensor"),
        (nn.Flatten, np.ones((2, 3)), TypeError, "Tensor"),
        (lambda: nn.Flatten(2, 5), mb.Tensor(np.ones((2, 3, 4))), ValueError, "out of range"),
    ],
)
def test_bad_inputs(layer: Any, x: Any, error: Any, words: str) -> None:
    with pytest.raises(error, match=words):
        layer()(x)
