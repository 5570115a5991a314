"""F.batch_norm: forward, the three gradients and both running buffers against PyTorch,
finite differences, hypothesis over shapes and hyper-parameters, dtypes, mutation rules
and errors. Every backward uses a random upstream gradient: with a sum() loss the true
dL/dx of a training-mode batch norm is exactly zero, so a wrong backward would pass.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minibam as mb
from minibam import functional as F

torch = pytest.importorskip("torch")

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _case(shape, seed=0, affine=True, dtype=np.float64):
    """x (shifted and scaled, so normalisation matters), weight, bias, buffers, upstream."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3.0 + 2.0).astype(dtype)
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    rm = rng.standard_normal(c).astype(dtype)
    rv = (rng.random(c) + 0.5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, w, b, rm, rv, dy


def _t(a, grad=False):
    return None if a is None else torch.tensor(a, requires_grad=grad)


def _mb(a, grad=False):
    return None if a is None else mb.Tensor(a, requires_grad=grad)


def _run_torch(x, w, b, rm, rv, dy, training, momentum=0.1, eps=1e-5):
    tx, tw, tb = _t(x, True), _t(w, True), _t(b, True)
    trm, trv = _t(rm), _t(rv)
    y = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, momentum, eps)
    y.backward(torch.tensor(dy))

    def np_(t):
        return None if t is None else t.detach().numpy()

    grads = [None if t is None else np_(t.grad) for t in (tx, tw, tb)]
    return np_(y), grads, np_(trm), np_(trv)


def _run_mb(x, w, b, rm, rv, dy, training, momentum=0.1, eps=1e-5):
    mx, mw, mbias = _mb(x, True), _mb(w, True), _mb(b, True)
    mrm, mrv = _mb(rm), _mb(rv)
    y = F.batch_norm(mx, mrm, mrv, mw, mbias, training=training, momentum=momentum, eps=eps)
    y.backward(dy)
    grads = [None if t is None else t.grad for t in (mx, mw, mbias)]
    return y.data, grads, (None if mrm is None else mrm.data), (None if mrv is None else mrv.data)


def _assert_same(ours, theirs, tol):
    y, grads, rm, rv = ours
    ty, tgrads, trm, trv = theirs
    np.testing.assert_allclose(y, ty, **tol, err_msg="forward")
    for name, g, tg in zip(("x", "weight", "bias"), grads, tgrads, strict=True):
        if tg is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, tg, **tol, err_msg=f"grad of {name}")
    for name, r, tr in (("running_mean", rm, trm), ("running_var", rv, trv)):
        if tr is None:
            assert r is None
        else:
            np.testing.assert_allclose(r, tr, **tol, err_msg=name)


# ----------------------------------------------------------------- vs PyTorch
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 2), (2, 4, 1, 3), (1, 2, 2, 1)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_torch(shape, training, affine):
    x, w, b, rm, rv, dy = _case(shape, affine=affine)
    args = (x, w, b, rm, rv, dy, training, 0.3, 1e-3)
    _assert_same(_run_mb(*args), _run_torch(*args), TIGHT)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4, 4)])
def test_training_without_running_stats_matches_torch(shape):
    x, w, b, _, _, dy = _case(shape)
    args = (x, w, b, None, None, dy, True)
    _assert_same(_run_mb(*args), _run_torch(*args), TIGHT)


def test_only_weight_and_bias_without_x_grad():
    x, w, b, rm, rv, dy = _case((4, 3, 2, 2))
    for training in (True, False):
        mw, mbias = mb.Tensor(w, requires_grad=True), mb.Tensor(b, requires_grad=True)
        mx = mb.Tensor(x)  # no grad wanted for x: backward takes the shorter path
        F.batch_norm(mx, mb.Tensor(rm), mb.Tensor(rv), mw, mbias, training=training).backward(dy)
        _, (_, tw, tb), _, _ = _run_torch(x, w, b, rm, rv, dy, training)
        assert mx.grad is None
        np.testing.assert_allclose(mw.grad, tw, **TIGHT)
        np.testing.assert_allclose(mbias.grad, tb, **TIGHT)


def test_running_stats_over_several_steps_match_torch():
    rng = np.random.default_rng(3)
    rm, rv = np.zeros(4), np.ones(4)
    mrm, mrv = mb.Tensor(rm), mb.Tensor(rv)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    for _ in range(4):
        x = rng.standard_normal((5, 4, 3, 3)) * 2 + 1
        F.batch_norm(mb.Tensor(x), mrm, mrv, training=True, momentum=0.25)
        torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.25)
    np.testing.assert_allclose(mrm.data, trm.numpy(), **TIGHT)
    np.testing.assert_allclose(mrv.data, trv.numpy(), **TIGHT)
    # The tracked variance is the unbiased one: m / (m - 1) times the biased one.
    assert not np.allclose(mrv.data, rv)


@st.composite
def bn_cases(draw):
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 4))
    spatial = draw(st.sampled_from([(), (1, 1), (2, 3), (3, 1), (4, 4)]))
    shape = (n, c, *spatial)
    training = draw(st.booleans())
    if training:
        assume(int(np.prod(shape)) // c > 1)
    momentum = draw(st.floats(0.0, 1.0))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1, 1.0]))
    affine = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return shape, training, momentum, eps, affine, seed


@given(bn_cases())
def test_matches_torch_hypothesis(case):
    shape, training, momentum, eps, affine, seed = case
    x, w, b, rm, rv, dy = _case(shape, seed=seed, affine=affine)
    args = (x, w, b, rm, rv, dy, training, momentum, eps)
    _assert_same(_run_mb(*args), _run_torch(*args), {"rtol": 1e-9, "atol": 1e-10})


# -------------------------------------------------------- finite differences
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 2, 3), (2, 1, 1, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(shape, training):
    x, w, b, rm, rv, _ = _case(shape, seed=1)

    def fn(x, w, b):
        # Fresh copies of the buffers on every call: training updates them in place.
        return F.batch_norm(x, mb.Tensor(rm), mb.Tensor(rv), w, b, training=training, eps=1e-3)

    inputs = [mb.Tensor(a, requires_grad=True) for a in (x, w, b)]
    assert mb.gradcheck(fn, inputs, atol=1e-6, rtol=1e-5)


def test_gradcheck_without_affine():
    x, _, _, _, _, _ = _case((5, 2, 2, 1), seed=2)
    assert mb.gradcheck(
        lambda x: F.batch_norm(x, None, None, training=True), [mb.Tensor(x, requires_grad=True)]
    )


def test_sum_loss_gives_zero_x_grad_but_random_upstream_does_not():
    x, w, b, rm, rv, dy = _case((6, 3))
    mx = mb.Tensor(x, requires_grad=True)
    F.batch_norm(mx, None, None, mb.Tensor(w), mb.Tensor(b), training=True).sum().backward()
    np.testing.assert_allclose(mx.grad, 0.0, atol=1e-12)
    mx.grad = None
    F.batch_norm(mx, None, None, mb.Tensor(w), mb.Tensor(b), training=True).backward(dy)
    assert np.abs(mx.grad).max() > 1e-3


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("training", [True, False])
def test_float32_stays_float32(training):
    x, w, b, rm, rv, dy = _case((8, 3, 4, 4), dtype=np.float32)
    ours = _run_mb(x, w, b, rm, rv, dy, training)
    y, grads, new_rm, new_rv = ours
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)
    assert new_rm.dtype == np.float32 and new_rv.dtype == np.float32
    _assert_same(ours, _run_torch(x, w, b, rm, rv, dy, training), {"rtol": 1e-4, "atol": 1e-4})


def test_float32_input_with_float64_buffers_promotes_and_buffers_keep_dtype():
    x, w, b, rm, rv, dy = _case((4, 3))
    x32 = x.astype(np.float32)
    mrm, mrv = mb.Tensor(rm), mb.Tensor(rv)
    mx = mb.Tensor(x32, requires_grad=True)
    y = F.batch_norm(mx, mrm, mrv, mb.Tensor(w), mb.Tensor(b), training=True)
    y.backward(dy)
    assert y.dtype == np.float64  # NumPy's promotion of the operands
    assert mx.grad.dtype == np.float32
    assert mrm.dtype == np.float64 and mrv.dtype == np.float64


# ---------------------------------------------------------------- mutation
@pytest.mark.parametrize("training", [True, False])
def test_mutation_rules(training):
    x, w, b, rm, rv, dy = _case((4, 3, 2, 2))
    mx, mw, mbias = mb.Tensor(x, requires_grad=True), mb.Tensor(w), mb.Tensor(b)
    mrm, mrv = mb.Tensor(rm), mb.Tensor(rv)
    rm_array, rv_array = mrm.data, mrv.data
    y = F.batch_norm(mx, mrm, mrv, mw, mbias, training=training)
    y.backward(dy)
    np.testing.assert_array_equal(mx.data, x)
    np.testing.assert_array_equal(mw.data, w)
    np.testing.assert_array_equal(mbias.data, b)
    # Updated in place: the very same arrays, with new values only in training.
    assert mrm.data is rm_array and mrv.data is rv_array
    assert not np.array_equal(mrm.data, rm) if training else np.array_equal(mrm.data, rm)
    assert not np.array_equal(mrv.data, rv) if training else np.array_equal(mrv.data, rv)


def test_ndarray_buffers_are_updated_in_place():
    x, _, _, rm, rv, _ = _case((5, 3))
    rm_arr, rv_arr = rm.copy(), rv.copy()
    F.batch_norm(mb.Tensor(x), rm_arr, rv_arr, training=True, momentum=0.5)
    np.testing.assert_allclose(rm_arr, 0.5 * rm + 0.5 * x.mean(axis=0), **TIGHT)
    np.testing.assert_allclose(rv_arr, 0.5 * rv + 0.5 * x.var(axis=0, ddof=1), **TIGHT)


def test_buffers_updated_under_no_grad():
    x, _, _, rm, rv, _ = _case((5, 3))
    mrm, mrv = mb.Tensor(rm), mb.Tensor(rv)
    with mb.no_grad():
        y = F.batch_norm(mb.Tensor(x, requires_grad=True), mrm, mrv, training=True)
    assert not y.requires_grad
    np.testing.assert_allclose(mrm.data, 0.9 * rm + 0.1 * x.mean(axis=0), **TIGHT)


def test_eval_backward_uses_statistics_of_its_forward():
    # A training call between an eval forward and its backward changes the buffers;
    # the eval backward must still use the values its forward normalised with.
    x, w, b, rm, rv, dy = _case((4, 3))
    mrm, mrv = mb.Tensor(rm), mb.Tensor(rv)
    mw = mb.Tensor(w, requires_grad=True)
    mx = mb.Tensor(x, requires_grad=True)
    y = F.batch_norm(mx, mrm, mrv, mw, mb.Tensor(b), training=False)
    F.batch_norm(mb.Tensor(x), mrm, mrv, training=True, momentum=0.9)
    y.backward(dy)
    _, (tx, tw, _), _, _ = _run_torch(x, w, b, rm, rv, dy, False)
    np.testing.assert_allclose(mx.grad, tx, **TIGHT)
    np.testing.assert_allclose(mw.grad, tw, **TIGHT)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_one_value_per_channel_in_training(shape):
    x = mb.Tensor(np.ones(shape))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.batch_norm(x, mb.Tensor(np.zeros(3)), mb.Tensor(np.ones(3)), training=True)
    # Evaluation needs no batch statistics, so one sample is fine there.
    y = F.batch_norm(x, mb.Tensor(np.zeros(3)), mb.Tensor(np.ones(3)), training=False)
    np.testing.assert_allclose(y.data, np.ones(shape) / np.sqrt(1 + 1e-5), **TIGHT)


def test_errors():
    x = mb.Tensor(np.ones((4, 3)))
    rm, rv = mb.Tensor(np.zeros(3)), mb.Tensor(np.ones(3))
    with pytest.raises(TypeError, match="x must be a minibam Tensor"):
        F.batch_norm(np.ones((4, 3)), rm, rv)
    with pytest.raises(ValueError, match=r"at least 2-D.*\(4,\)"):
        F.batch_norm(mb.Tensor(np.ones(4)), rm, rv)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\).*\(2,\)"):
        F.batch_norm(x, mb.Tensor(np.zeros(2)), rv)
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\).*\(3, 1\)"):
        F.batch_norm(x, rm, mb.Tensor(np.ones((3, 1))))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*\(4,\)"):
        F.batch_norm(x, rm, rv, weight=mb.Tensor(np.ones(4)))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\).*\(2,\)"):
        F.batch_norm(x, rm, rv, bias=mb.Tensor(np.ones(2)))
    with pytest.raises(TypeError, match="weight must be a minibam Tensor"):
        F.batch_norm(x, rm, rv, weight=np.ones(3))
    with pytest.raises(ValueError, match="both be None or neither"):
        F.batch_norm(x, rm, None, training=True)
    with pytest.raises(ValueError, match="must be given in evaluation mode"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(TypeError, match="running_mean must be"):
        F.batch_norm(x, [0.0, 0.0, 0.0], rv)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.batch_norm(x, np.zeros(3, dtype=np.int64), np.ones(3, dtype=np.int64))
    with pytest.raises(ValueError, match="eps must be positive during training"):
        F.batch_norm(x, rm, rv, training=True, eps=0.0)
    with pytest.raises(ValueError, match="eps must be non-negative"):
        F.batch_norm(x, rm, rv, training=False, eps=-1.0)
    with pytest.raises(TypeError, match="momentum must be a real number"):
        F.batch_norm(x, rm, rv, training=True, momentum=None)
    # A refused call leaves the buffers alone.
    np.testing.assert_array_equal(rm.data, 0.0)
    np.testing.assert_array_equal(rv.data, 1.0)
