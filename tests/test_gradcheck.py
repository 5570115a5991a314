"""mb.gradcheck: passes correct ops, and names the input and element of a wrong one."""

import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from strategies import arrays, seeds

import minibam as mb
from minibam import functional as F
from minibam.function import Function


def _t(a, requires_grad=True):
    return mb.Tensor(a, requires_grad=requires_grad)


@given(x=arrays((2, 3)), w=arrays((4, 3)), b=arrays((4,)), seed=seeds())
def test_passes_on_correct_ops(x, w, b, seed):
    assert mb.gradcheck(lambda x, w, b: F.linear(x, w, b).sigmoid(), [_t(x), _t(w), _t(b)], seed=seed)
    assert mb.gradcheck(lambda x: (x * x).mean(axis=0) / 3.0, [_t(x)], seed=seed)


class _OffByOneAt(Function):
    """y = a * b, with a gradient for b that is wrong at exactly one element."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        gb = grad * a
        gb[1, 2] += 1.0
        return grad * b, gb


def test_names_input_worst_element_and_values():
    a = _t(np.arange(1.0, 7.0).reshape(2, 3))
    b = _t(np.full((2, 3), 0.5))
    with pytest.raises(mb.GradcheckError) as info:
        mb.gradcheck(_OffByOneAt.apply, [a, b])
    message = str(info.value)
    assert "input 1" in message
    assert "(1, 2)" in message
    analytic, numeric = map(float, re.search(r"analytic (\S+), numeric (\S+) ", message).groups())
    assert analytic - numeric == pytest.approx(1.0, abs=1e-6)


def test_error_is_an_assertion_error():
    assert issubclass(mb.GradcheckError, AssertionError)


class _ForgetsTheMean(Function):
    """y = x - mean(x) whose backward forgets the mean term. With a sum() loss the true
    gradient is exactly 0 and this backward returns 0 too; only a random upstream
    gradient exposes it."""

    @staticmethod
    def forward(ctx, x):
        return x - x.mean()

    @staticmethod
    def backward(ctx, grad):
        return (grad - grad,)


def test_random_upstream_catches_what_a_sum_loss_hides():
    x = _t(np.array([1.0, 4.0, -2.0]))
    # A ones upstream (what .sum() would give) cannot see the bug ...
    _ForgetsTheMean.apply(x).backward(np.ones(3))
    np.testing.assert_allclose(x.grad, 0.0)
    # ... the random upstream of gradcheck does.
    with pytest.raises(mb.GradcheckError, match="input 0"):
        mb.gradcheck(_ForgetsTheMean.apply, [x])


def test_leaves_the_callers_tensors_alone():
    x32 = _t(np.array([1.0, 2.0], dtype=np.float32))
    before = x32.data.copy()
    seen = []

    def fn(x):
        seen.append(x.dtype)
        return x.exp()

    assert mb.gradcheck(fn, [x32])
    assert set(seen) == {np.dtype(np.float64)}  # checked in float64
    assert x32.grad is None and x32.dtype == np.float32
    np.testing.assert_array_equal(x32.data, before)


def test_non_tensor_arguments_pass_through_and_constants_are_skipped():
    x = _t(np.array([[1.0, 2.0], [3.0, 4.0]]))
    c = _t(np.array([5.0, 6.0]), requires_grad=False)
    assert mb.gradcheck(lambda x, c, axis: (x * c).sum(axis=axis), [x, c, 1])
    assert mb.gradcheck(lambda x: x.exp(), x)  # a single Tensor instead of a list


def test_argument_errors():
    with pytest.raises(ValueError, match="requires_grad"):
        mb.gradcheck(lambda x: x * 2, [mb.Tensor([1.0])])
    with pytest.raises(TypeError, match="must return a Tensor"):
        mb.gradcheck(lambda x: x.data, [_t([1.0])])
    with pytest.raises(mb.GradcheckError, match="does not depend"):
        mb.gradcheck(lambda x, c: c * 2, [_t([1.0]), mb.Tensor([1.0])])
    # Fuzz finding: integers beyond int64 reached NumPy's isfinite, which has no loop for them.
    for name in ("eps", "atol", "rtol"):
        with pytest.raises(ValueError, match=rf"gradcheck: {name} must be finite and .*, got -{2**70}"):
            mb.gradcheck(lambda x: x * 2, [_t([1.0])], **{name: -(2**70)})
        with pytest.raises(ValueError, match=rf"gradcheck: {name} must be finite"):
            mb.gradcheck(lambda x: x * 2, [_t([1.0])], **{name: 10**400})
        with pytest.raises(TypeError, match=rf"gradcheck: {name} must be a real number, got 'x'"):
            mb.gradcheck(lambda x: x * 2, [_t([1.0])], **{name: "x"})


def test_an_empty_input_has_an_empty_gradient_to_check():
    # Fuzz finding: an empty x "shares no memory" with its flat view, which was refused as
    # a copy (a ValueError from numeric_gradient, not naming gradcheck).
    assert mb.gradcheck(lambda t: (t * t).sum(), [_t(np.zeros((0, 3)))])
    assert mb.gradcheck(lambda a, b: (a * b).sum() + b.sum(), [_t(np.zeros((2, 0))), _t(np.ones(1))])


def test_nan_gradients_fail_and_a_huge_eps_does_not_warn():
    # Fuzz finding: eps=1e308 overflowed with a RuntimeWarning, and the resulting nan
    # "passed" (nan > 0 is False); a nan gradient must never pass.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(mb.GradcheckError, match=r"numeric nan .*eps=1e\+308"):
            mb.gradcheck(lambda t: (t * t).sum(), [_t([1.0, 2.0])], eps=np.float64(1e308))
        with pytest.raises(mb.GradcheckError, match="analytic nan"):
            mb.gradcheck(lambda t: (t * np.nan).sum(), [_t([1.0, 2.0])])


def test_tolerances_are_used():
    x = _t(np.array([1.0, 2.0]))

    class Scaled(Function):  # gradient 1 % too large
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return (2.02 * grad,)

    with pytest.raises(mb.GradcheckError):
        mb.gradcheck(Scaled.apply, [x])
    assert mb.gradcheck(Scaled.apply, [x], rtol=0.02)
