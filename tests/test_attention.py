"""F.bam_combine, BAM's fused last step: y = x * (1 + sigmoid(M_c (+|*) M_s))."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds
from torch_ref import assert_matches_torch

import minibam as mb
from minibam import functional as F

COMBINES = ["sum", "product"]


def torch_combine(combine):
    import torch

    def f(x, mc, ms):
        a = mc + ms if combine == "sum" else mc * ms
        return x * (1 + torch.sigmoid(a))

    return f


@st.composite
def cases(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(seeds()))
    scale = draw(st.sampled_from([0.5, 3.0, 40.0]))  # 40: saturated sigmoids
    return (rng.standard_normal((n, c, h, w)), rng.standard_normal((n, c, 1, 1)) * scale,
            rng.standard_normal((n, 1, h, w)) * scale)


@pytest.mark.parametrize("combine", COMBINES)
@given(case=cases(), seed=seeds())
def test_matches_torch(combine, case, seed):
    assert_matches_torch(lambda x, mc, ms: F.bam_combine(x, mc, ms, combine),
                         torch_combine(combine), list(case), seed=seed)


@pytest.mark.parametrize("combine", COMBINES)
def test_large_maps_span_several_cache_blocks(combine):
    """C * H * W above the backward's block size, so the blocked loop is exercised."""
    rng = np.random.default_rng(1)
    case = [rng.standard_normal((2, 70, 31, 29)), rng.standard_normal((2, 70, 1, 1)),
            rng.standard_normal((2, 1, 31, 29))]
    assert_matches_torch(lambda x, mc, ms: F.bam_combine(x, mc, ms, combine),
                         torch_combine(combine), case, seed=2)


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("block", [1, 7, 20])
def test_every_sample_split_into_several_blocks(combine, block, monkeypatch):
    """Whatever the production block size, shrink it so that each sample's channels span
    several blocks: an accumulation across blocks (``dms[i, 0] += ...``) written as an
    assignment then fails here (issue 13, item 12), as does any per-block slicing error.
    (The fast path's blocks, minibam/backends/combine.py.)"""
    from minibam.backends import combine as attention

    monkeypatch.setattr(attention, "BLOCK_ELEMENTS", block)
    monkeypatch.setattr(mb.backends.fast, "enabled", True)
    n, c, h, w = 2, 5, 3, 2
    blocks = list(attention._blocks(n, c, h * w))
    assert len(blocks) >= 2 * n  # the loop really visits several blocks per sample
    rng = np.random.default_rng(block)
    case = [rng.standard_normal((n, c, h, w)), rng.standard_normal((n, c, 1, 1)),
            rng.standard_normal((n, 1, h, w))]
    fn = lambda x, mc, ms: F.bam_combine(x, mc, ms, combine)  # noqa: E731
    assert_matches_torch(fn, torch_combine(combine), case, seed=block)
    assert mb.gradcheck(fn, [mb.Tensor(a, requires_grad=True) for a in case], seed=block)


@pytest.mark.parametrize("combine", COMBINES)
@given(case=cases())
def test_finite_differences(combine, case):
    x, mc, ms = (mb.Tensor(np.clip(a, -4, 4), requires_grad=True) for a in case)
    assert mb.gradcheck(lambda x, mc, ms: F.bam_combine(x, mc, ms, combine), [x, mc, ms])


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("which", [(True, False, False), (False, True, False), (False, False, True)])
def test_only_the_gradients_asked_for(combine, which):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 1, 1)),
              rng.standard_normal((2, 1, 4, 5))]
    full = [mb.Tensor(a, requires_grad=True) for a in arrays]
    some = [mb.Tensor(a, requires_grad=r) for a, r in zip(arrays, which)]
    dy = rng.standard_normal((2, 3, 4, 5))
    F.bam_combine(*full, combine).backward(dy)
    F.bam_combine(*some, combine).backward(dy)
    for f, s in zip(full, some):
        if s.requires_grad:
            np.testing.assert_allclose(s.grad, f.grad, rtol=1e-14)
        else:
            assert s.grad is None


@pytest.mark.parametrize("combine", COMBINES)
def test_float32_and_no_overflow(combine):
    x = mb.Tensor(np.ones((2, 2, 2, 2), np.float32), requires_grad=True)
    mc = mb.Tensor(np.full((2, 2, 1, 1), -1000, np.float32), requires_grad=True)
    ms = mb.Tensor(np.full((2, 1, 2, 2), 1000 if combine == "product" else -1000, np.float32),
                   requires_grad=True)
    with np.errstate(all="raise"):
        y = F.bam_combine(x, mc, ms, combine)
        y.backward(np.ones((2, 2, 2, 2), np.float32))
    assert y.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in (x, mc, ms))
    np.testing.assert_array_equal(y.data, 1.0)  # sigmoid(-huge) = 0 exactly
    np.testing.assert_array_equal(mc.grad, 0.0)


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 1, 1)),
              rng.standard_normal((2, 1, 4, 5))]
    copies = [a.copy() for a in arrays]
    tensors = [mb.Tensor(a, requires_grad=True) for a in arrays]
    dy = rng.standard_normal((2, 3, 4, 5))
    dy_copy = dy.copy()
    F.bam_combine(*tensors, "product").backward(dy)
    for t, c in zip(tensors, copies):
        np.testing.assert_array_equal(t.data, c)
    np.testing.assert_array_equal(dy, dy_copy)


def test_errors():
    x = mb.Tensor(np.zeros((2, 3, 4, 5)))
    mc, ms = mb.Tensor(np.zeros((2, 3, 1, 1))), mb.Tensor(np.zeros((2, 1, 4, 5)))
    with pytest.raises(ValueError, match="combine"):
        F.bam_combine(x, mc, ms, "mean")
    with pytest.raises(ValueError, match=r"\(2, 3, 1, 1\)"):
        F.bam_combine(x, mb.Tensor(np.zeros((2, 3))), ms)
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 5\)"):
        F.bam_combine(x, mc, mb.Tensor(np.zeros((2, 1, 5, 4))))
    with pytest.raises(ValueError, match="N, C, H, W"):
        F.bam_combine(mb.Tensor(np.zeros((2, 3))), mc, ms)
    with pytest.raises(TypeError):
        F.bam_combine(np.zeros((2, 3, 4, 5)), mc, ms)


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_give_the_single_thread_results(monkeypatch, combine, dtype):
    """The blocks shared out between threads (backends/threads.py) compute what one thread
    computes; M_s's gradient, summed from each thread's share, up to round-off."""
    from minibam.backends import combine as attention
    from minibam.backends import threads as _parallel

    monkeypatch.setattr(mb.backends.fast, "enabled", True)
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(s).astype(dtype) for s in ((3, 7, 5, 6), (3, 7, 1, 1), (3, 1, 5, 6))]
    dy = rng.standard_normal((3, 7, 5, 6)).astype(dtype)
    monkeypatch.setattr(attention, "BLOCK_ELEMENTS", 64)  # several channels' blocks per sample
    results = []
    for threads in (1, 3):
        monkeypatch.setattr(_parallel, "THREADS", threads)
        tensors = [mb.Tensor(a, requires_grad=True) for a in arrays]
        with np.errstate(all="raise"):  # the caller's settings hold in every thread
            y = F.bam_combine(*tensors, combine)
            y.backward(dy)
        results.append([y.data] + [t.grad for t in tensors])
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for one, many in zip(*results):
        assert one.dtype == dtype
        np.testing.assert_allclose(many, one, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_when_the_exp_of_a_sum_factorises(dtype):
    """e^{-(M_c + M_s)} as e^{-M_c} e^{-M_s} only while both factors and their product are
    finite; beyond that, or for inf and nan, the one-exp-per-element path."""
    from minibam.backends.combine import factorises

    limit = np.log(np.finfo(dtype).max) / 2 - 1
    small, ok = np.zeros((1, 1, 1, 1), dtype), np.full((1, 1, 1, 1), limit, dtype)
    assert factorises(ok, -ok, dtype) and factorises(small, small, dtype)
    assert np.isfinite(np.exp(ok.astype(dtype)) * np.exp(ok.astype(dtype))).all()
    beyond = np.nextafter(ok, dtype(np.inf))
    for bad in (beyond, -beyond, np.full_like(ok, np.inf), np.full_like(ok, np.nan)):
        assert not factorises(bad, small, dtype) and not factorises(small, bad, dtype)


class _Ctx:
    needs_input_grad = (True, True, True)

    def save_for_backward(self, *arrays):
        self.saved = arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reach", [0.05, 1.0, 3.0])
def test_both_sigmoid_paths_match_an_exact_sigmoid(dtype, reach):
    """s = sigma(M_c + M_s) against a long-double sigmoid of the exact sum, wherever s is
    a normal number: the fast path (maps up to 0.05 and 1 times the limit) within 4
    units of round-off whatever the size of a; the fallback (3 times) within |a| + 4,
    as it rounds the sum before its exp (the claim of `factorises`)."""
    from minibam.backends.combine import FastBamCombine as BamCombine
    from minibam.backends.combine import factorises

    rng = np.random.default_rng(7)
    limit = np.log(np.finfo(dtype).max) / 2 - 1
    x = np.ones((2, 3, 4, 5), dtype)
    mc, ms = (rng.uniform(-1, 1, shape).astype(dtype) * dtype(reach * limit) for shape in ((2, 3, 1, 1), (2, 1, 4, 5)))
    if reach == 3.0:
        mc[0, 0] = 2.5 * limit  # surely beyond
    assert factorises(mc, ms, dtype) == (reach <= 1)
    ctx = _Ctx()
    BamCombine.forward(ctx, x, mc, ms, "sum")
    s = ctx.saved[3]
    exact = 1 / (1 + np.exp(-(mc.astype(np.longdouble) + ms.astype(np.longdouble))))
    normal = exact >= np.finfo(dtype).tiny
    assert normal.sum() >= 20
    units = np.abs(s[normal] - exact[normal]) / exact[normal] / (np.finfo(dtype).eps / 2)
    a = np.abs(mc + ms)[normal]
    assert (units <= (4 if reach <= 1 else a + 4)).all()
    if reach <= 1:
        assert a.max() > 40 or reach < 1  # sums far from 0, where fl(a) would cost |a| units
