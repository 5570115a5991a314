"""reshape, transpose/permute, flatten, expand and basic slicing."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, basic_indices, random_upstream, seeds, shapes
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F


def _t(a, requires_grad=True):
    return mb.Tensor(a, requires_grad=requires_grad)


def _check(fn, torch_fn, x, seed):
    assert_matches_torch(fn, torch_fn, [x], seed=seed)
    assert mb.gradcheck(fn, [_t(x)], seed=seed)


def _prime_factors(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


@st.composite
def reshape_targets(draw, shape):
    """A shape with as many elements as ``shape``, maybe with one -1 in it."""
    n = math.prod(shape)
    ndim = draw(st.integers(0 if n == 1 else 1, 4))
    if ndim == 0:
        return ()
    target = [1] * ndim
    for p in _prime_factors(n):
        target[draw(st.integers(0, ndim - 1))] *= p
    if draw(st.booleans()):
        target[draw(st.integers(0, ndim - 1))] = -1
    return tuple(target)


# ------------------------------------------------------------------------ reshape


@given(data=st.data())
def test_reshape(data):
    shape = data.draw(shapes(), label="shape")
    target = data.draw(reshape_targets(shape), label="target")
    x = data.draw(arrays(shape), label="x")
    seed = data.draw(seeds(), label="seed")
    _check(lambda t: t.reshape(*target), lambda t: t.reshape(target), x, seed)
    y = F.reshape(_t(x), target)  # a tuple works too
    np.testing.assert_array_equal(y.data, x.reshape(target))
    np.testing.assert_array_equal(_t(x).view(target).data, y.data)


def test_reshape_errors():
    x = _t(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\) into \(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        x.reshape(-1, -1)
    with pytest.raises(TypeError, match="ints"):
        x.reshape(2.0, 3)
    with pytest.raises(TypeError, match="Tensor"):
        F.reshape(np.ones(6), 2, 3)


# ---------------------------------------------------------------------- transpose


@given(data=st.data())
def test_transpose_two_axes_swaps_them_like_torch(data):
    shape = data.draw(shapes(min_dims=1), label="shape")
    ndim = len(shape)
    d0 = data.draw(st.integers(-ndim, ndim - 1), label="d0")
    d1 = data.draw(st.integers(-ndim, ndim - 1), label="d1")
    x = data.draw(arrays(shape), label="x")
    seed = data.draw(seeds(), label="seed")
    _check(lambda t: t.transpose(d0, d1), lambda t: t.transpose(d0, d1), x, seed)
    np.testing.assert_array_equal(F.transpose(_t(x), d0, d1).data, np.swapaxes(x, d0, d1))


def test_transpose_of_a_matrix():
    x = np.arange(6.0).reshape(2, 3)
    for axes in ((0, 1), (1, 0), (-1, 0), ()):
        np.testing.assert_array_equal(_t(x).transpose(*axes).data, x.T)
    np.testing.assert_array_equal(_t(x).T.data, x.T)


@given(data=st.data())
def test_transpose_with_all_axes_permutes(data):
    shape = data.draw(shapes(min_dims=3), label="shape")
    perm = tuple(data.draw(st.permutations(range(len(shape))), label="perm"))
    x = data.draw(arrays(shape), label="x")
    seed = data.draw(seeds(), label="seed")
    _check(lambda t: t.transpose(*perm), lambda t: t.permute(*perm), x, seed)
    _check(lambda t: t.permute(perm), lambda t: t.permute(*perm), x, seed)
    np.testing.assert_array_equal(_t(x).transpose().data, x.T)  # no axes: reversed


@given(shape=shapes(), seed=seeds())
def test_permute_any_rank(shape, seed):
    perm = tuple(np.random.default_rng(seed).permutation(len(shape)).tolist())
    x = random_upstream(shape, seed + 1)
    _check(lambda t: F.permute(t, *perm), lambda t: t.permute(perm), x, seed)


def test_transpose_errors():
    x = _t(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\(0, 5\).*\(2, 3, 4\)"):
        x.transpose(0, 5)
    with pytest.raises(ValueError, match=r"\(0, 5\).*\(2, 3\)"):
        _t(np.ones((2, 3))).transpose(0, 5)
    with pytest.raises(ValueError, match="not a permutation"):
        x.transpose(0, 1, 1)
    with pytest.raises(ValueError, match="not a permutation"):
        x.permute(0, 1)
    with pytest.raises(TypeError, match="Tensor"):
        F.transpose(np.ones((2, 3)), 0, 1)
    with pytest.raises(TypeError, match="Tensor"):
        F.permute([[1.0]], 1, 0)


# ------------------------------------------------------------------------ flatten


@given(data=st.data())
def test_flatten(data):
    shape = data.draw(shapes(min_dims=1), label="shape")
    ndim = len(shape)
    start = data.draw(st.integers(-ndim, ndim - 1), label="start")
    end = data.draw(st.integers(-ndim, ndim - 1), label="end")
    x = data.draw(arrays(shape), label="x")
    seed = data.draw(seeds(), label="seed")
    if start % ndim > end % ndim:
        with pytest.raises(ValueError, match="start_dim"):
            F.flatten(_t(x), start, end)
        return
    _check(lambda t: F.flatten(t, start, end), lambda t: t.flatten(start, end), x, seed)


def test_flatten_edges():
    assert _t(3.0).flatten().shape == (1,)
    with pytest.raises(ValueError, match=r"dim 3 .*\(2, 3, 4\)"):
        _t(np.ones((2, 3, 4))).flatten(3)
    with pytest.raises(TypeError, match="Tensor"):
        F.flatten(np.ones((2, 3)))


# ------------------------------------------------------------------------- expand


@st.composite
def expand_cases(draw):
    """(input shape, requested shape with -1 where a size is kept, resulting shape)."""
    target = draw(shapes(min_dims=0))
    kept = draw(st.integers(0, len(target)))
    base, request = [], list(target)
    for i in range(len(target) - kept, len(target)):
        base.append(1 if draw(st.booleans()) else target[i])
        if base[-1] == target[i] and draw(st.booleans()):
            request[i] = -1
    return tuple(base), tuple(request), target


@given(case=expand_cases(), seed=seeds())
def test_expand(case, seed):
    shape, request, target = case
    x = random_upstream(shape, seed)
    _check(lambda t: t.expand(*request), lambda t: t.expand(request), x, seed)
    np.testing.assert_array_equal(F.expand(_t(x), request).data, np.broadcast_to(x, target))


def test_expand_sums_the_gradient_back():
    x = _t(np.array([[1.0], [2.0]]))
    y = x.expand(3, -1, 4)
    assert y.shape == (3, 2, 4)
    g = np.arange(24.0).reshape(3, 2, 4)
    y.backward(g)
    np.testing.assert_array_equal(x.grad, g.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(_t(np.ones(3)).broadcast_to(2, 3).data, np.ones((2, 3)))


def test_expand_errors():
    x = _t(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\) to \(2, 4\)"):
        x.expand(2, 4)
    with pytest.raises(ValueError, match=r"\(2, 3\) to fewer dimensions \(3,\)"):
        x.expand(3)
    with pytest.raises(ValueError, match=r"\(2, 3\) to \(-1, 2, 3\)"):
        x.expand(-1, 2, 3)  # -1 in a new leading axis, as torch refuses too
    with pytest.raises(TypeError, match="Tensor"):
        F.expand(np.ones(3), 2, 3)


# ------------------------------------------------------------------------ slicing


def _has_negative_step(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, slice) and i.step is not None and i.step < 0 for i in items)


@given(data=st.data())
def test_basic_indexing(data):
    shape = data.draw(shapes(), label="shape")
    index = data.draw(basic_indices(shape), label="index")
    x = data.draw(arrays(shape), label="x")
    seed = data.draw(seeds(), label="seed")
    y = _t(x)[index]
    np.testing.assert_array_equal(y.data, x[index])
    assert mb.gradcheck(lambda t: t[index], [_t(x)], seed=seed)
    if not _has_negative_step(index):  # torch has no negative steps
        assert_matches_torch(lambda t: t[index], lambda t: t[index], [x], seed=seed)


def test_negative_steps_none_and_ellipsis():
    x = _t(np.arange(24.0).reshape(2, 3, 4))
    y = x[..., None, ::-2]
    assert y.shape == (2, 3, 1, 2)
    np.testing.assert_array_equal(y.data, x.data[..., None, ::-2])
    g = random_upstream(y.shape, 0)
    y.backward(g)
    expected = np.zeros((2, 3, 4))
    expected[:, :, 3] = g[:, :, 0, 0]
    expected[:, :, 1] = g[:, :, 0, 1]
    np.testing.assert_array_equal(x.grad, expected)


def test_indexing_errors():
    x = _t(np.ones((3, 4)))
    for index in ([0, 1], np.array([0, 1]), np.array([True, False, True]), True,
                  mb.Tensor([0.0]), 1.0, (0, [1, 2]), (slice(None), np.int64(1), [0])):
        with pytest.raises(TypeError, match="slices"):
            x[index]
    with pytest.raises(IndexError, match=r"\(3, 4\)"):
        x[3]
    with pytest.raises(IndexError, match=r"\(3, 4\)"):
        x[0, 0, 0]


@pytest.mark.parametrize(
    "op",
    [
        lambda t: t.reshape(-1), lambda t: t.transpose(0, 1), lambda t: t.permute(1, 0),
        lambda t: t.expand(3, 2, 2), lambda t: t[::-1, None], lambda t: t.flatten(),
    ],
)
def test_float32_stays_float32(op):
    x = _t(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    y = op(x)
    assert y.dtype == np.float32
    y.backward(random_upstream(y.shape, 0))
    assert x.grad.dtype == np.float32
