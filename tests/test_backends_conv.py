"""The convolution kernels that skip the padding (minibam/backends/conv_regions.py) and the
reused temporaries (minibam/backends/scratch.py), against the plain op (minibam/ops/conv.py).

Derivation: docs/derivations/conv.md, formula (C), with its zero terms left out region by
region (docs/fast-kernels.md, "Skipping the padding"). Tolerance: that of every fast
kernel (tests/test_backends.py, ``TOL``: 2e-5 in float32 and 1e-12 in float64, relative
to the largest value of the compared array): the regions sum the same products in
another order.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_backends import TOL, _assert_close, conv_arrays, conv_cases

import minibam as mb
from minibam import functional as F
from minibam.backends import allocator, conv_flat, conv_regions, fast, scratch
from minibam.ops.conv import geometry


@st.composite
def padded_cases(draw):
    """Stride-1 convolutions with padding up to the kernel's reach (the kind the regions
    take), any dilation, odd and even kernels, maps smaller than the dilation included."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, dilation[0] * (kh - 1))), draw(st.integers(0, dilation[1] * (kw - 1))))
    lowest = [max(1, d * (k - 1) + 1 - 2 * p) for k, p, d in zip((kh, kw), padding, dilation, strict=True)]
    h, w = (draw(st.integers(low, low + 8)) for low in lowest)
    stride = (1, 1) if draw(st.integers(0, 4)) else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return conv_arrays(draw, (n, c, h, w), (o, c, kh, kw), dict(stride=stride, padding=padding, dilation=dilation))


@settings(max_examples=60, deadline=None)
@given(case=padded_cases(), keep_columns=st.booleans(), frozen=st.sampled_from([(), (0,), (1,), (2,)]),
       threaded=st.booleans())
def test_regions_match_the_plain_op(case, keep_columns, frozen, threaded):
    """Forward, dx, dW and db by the regions = im2col and col2im; with the columns kept
    for dW (freed memory kept) or rebuilt in backward (as imported); with some inputs not
    needing a gradient; the copies on one thread or shared between threads."""
    x, weight, bias, params, dtype, rng = case
    out = F.conv2d(mb.Tensor(x), mb.Tensor(weight), None, **params).shape
    dy = rng.standard_normal(out).astype(dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_regions, "REGIONS_MIN_SKIPPED", {4: 0.0, 8: 0.0})
        patch.setattr(conv_regions, "REGIONS_MIN_CHANNELS", 1)
        patch.setattr(allocator, "freed_memory_kept", lambda: keep_columns)
        patch.setattr(conv_regions, "THREADED_MIN_ELEMENTS", 0 if threaded else 1 << 60)
        results = []
        for enabled in (False, True):
            with fast.flags(enabled=enabled):
                arrays = [x, weight, bias]
                tensors = [None if a is None else mb.Tensor(a, requires_grad=i not in frozen)
                           for i, a in enumerate(arrays)]
                y = F.conv2d(*tensors, **params)
                y.backward(dy)
                results.append([y.data] + [None if t is None else t.grad for t in tensors])
    _assert_close(*results, dtype)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 30), k=st.integers(1, 5), s=st.integers(1, 3), d=st.integers(1, 5), data=st.data())
def test_segments_cover_each_axis_once_with_exactly_the_taps_inside(size, k, s, d, data):
    """Each output position is in one run, and its run's taps are exactly those whose
    input row a s + i d - p lies inside [0, size) (brute force)."""
    p = data.draw(st.integers(0, d * (k - 1) + 2))
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        return
    runs = conv_regions.segments(size, k, s, p, d, out)
    covered = [a for r in runs for a in range(r.start, r.stop)]
    assert covered == list(range(out))
    for r in runs:
        for a in range(r.start, r.stop):
            inside = [i for i in range(k) if 0 <= a * s + i * d - p < size]
            assert inside == list(range(r.tap0, r.tap1))


def test_products_counted_for_bams_convolutions():
    """The share of im2col's products with padding zeros, by formula (docs/fast-kernels.md):
    per axis (3 (H - 2d) + 2 * 2d) / (3 H) taps are inside, for H >= 2d."""
    for h, expected in ((14, 1 - (34 / 42) ** 2), (28, 1 - (76 / 84) ** 2), (56, 1 - (160 / 168) ** 2)):
        g = geometry("t", h, h, 3, 1, 4, 4)
        assert conv_regions.skipped_share(h, h, g) == pytest.approx(expected)
        full, kept = conv_regions.products((2, 3, h, h), 5, g)
        assert full == 2 * 5 * 3 * h * h * 9 and kept == pytest.approx(full * (1 - expected))


def test_bams_dilated_convolutions_take_the_regions_where_they_pay():
    from minibam.backends.conv import _path

    assert _path(64, 14, 14, geometry("t", 14, 14, 3, 1, 4, 4)) == "regions"
    assert _path(32, 28, 28, geometry("t", 28, 28, 3, 1, 4, 4), itemsize=8) == "regions"  # 18 %, float64
    assert _path(32, 28, 28, geometry("t", 28, 28, 3, 1, 4, 4), itemsize=4) == "columns"  # ... float32
    assert _path(16, 56, 56, geometry("t", 56, 56, 3, 1, 4, 4)) == "flat"  # 9 % zeros: no copies wins
    assert _path(4, 32, 32, geometry("t", 32, 32, 3, 1, 4, 4)) == "columns"  # too few channels (and 25 % flat waste)
    assert _path(64, 14, 14, geometry("t", 14, 14, 3, 2, 4, 4)) == "regions"  # dx then by col2im
    assert _path(64, 14, 14, geometry("t", 14, 14, 3, 1, 9, 4)) == "columns"  # a tap past any input
    assert _path(64, 14, 14, geometry("t", 14, 14, 3, 1, 0, 1)) == "columns"  # no padding to skip


def test_scratch_reuses_and_never_hands_out_a_buffer_in_use(monkeypatch):
    monkeypatch.setattr(allocator, "freed_memory_kept", lambda: False)  # whatever MALLOC_* says
    scratch.release()
    a = scratch.take((256, 256), np.float32)
    b = scratch.take((256, 256), np.float32)
    assert not np.shares_memory(a, b)
    scratch.give(a)
    assert scratch.take((256, 256), np.float32) is a  # kept, handed out again
    assert scratch.take((256, 256), np.float32) is not a  # ... once only
    scratch.give(b)
    scratch.give(b)  # given twice: kept once
    assert scratch.take((256, 256), np.float32) is b
    assert scratch.take((256, 256), np.float32) is not b
    scratch.give(a[:10])  # a view is never kept
    small = scratch.take((4,), np.float64)
    scratch.give(small)  # too small to be worth keeping
    assert scratch.held_bytes() == 0
    scratch.release()


def test_scratch_stays_within_its_bound(monkeypatch):
    monkeypatch.setattr(allocator, "freed_memory_kept", lambda: False)
    scratch.release()
    monkeypatch.setattr(scratch, "LIMIT_BYTES", 3 * 256 * 256 * 4)
    buffers = [np.empty((256, 256), np.float32) for _ in range(5)]
    for buffer in buffers:
        scratch.give(buffer)
    assert scratch.held_bytes() <= scratch.LIMIT_BYTES
    assert scratch.take((256, 256), np.float32) is buffers[-1]  # the most recent are kept
    scratch.release()


@pytest.mark.parametrize("keep_columns", [False, True])
def test_no_result_shares_memory_with_a_kept_buffer(keep_columns, monkeypatch):
    """y, x.grad, W.grad, b.grad are the caller's: none is a buffer the pool may hand out
    again; and a second backward through the same graph gives the same gradients."""
    monkeypatch.setattr(allocator, "freed_memory_kept", lambda: keep_columns)
    scratch.release()
    rng = np.random.default_rng(0)
    x = mb.Tensor(rng.standard_normal((4, 16, 14, 14)).astype(np.float32), requires_grad=True)
    w = mb.Tensor(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), requires_grad=True)
    b = mb.Tensor(rng.standard_normal(16).astype(np.float32), requires_grad=True)
    with fast.flags(enabled=True):  # the fast path whatever MINIBAM_FAST says (CI runs both)
        y = F.conv2d(x, w, b, padding=4, dilation=4)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(dy)
    first = [t.grad.copy() for t in (x, w, b)]
    pooled = [a for arrays in scratch._pool.values() for a in arrays]
    assert pooled or keep_columns  # as imported, the step did keep temporaries
    for result in (y.data, x.grad, w.grad, b.grad):
        assert not any(np.shares_memory(result, a) for a in pooled)
    for t in (x, w, b):
        t.grad = None
    y.backward(dy)  # the saved context survived the first walk
    for t, g in zip((x, w, b), first, strict=True):
        np.testing.assert_array_equal(t.grad, g)
    scratch.release()


@settings(max_examples=50, deadline=None)
@given(case=conv_cases(), keep_columns=st.booleans(), force_flat=st.booleans(),
       frozen=st.sampled_from([(), (0,), (1,)]))
def test_every_conv_path_with_columns_kept_or_rebuilt(case, keep_columns, force_flat, frozen):
    """im2col, 1x1 and the flat layout (tests/test_backends.py's cases), with dW's columns
    kept from forward (freed memory kept) or rebuilt in backward into reused buffers."""
    x, weight, bias, params, dtype, rng = case
    out = F.conv2d(mb.Tensor(x), mb.Tensor(weight), None, **params).shape
    dy = rng.standard_normal(out).astype(dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(allocator, "freed_memory_kept", lambda: keep_columns)
        if force_flat:
            patch.setattr(conv_flat, "FLAT_MAX_WASTE", float("inf"))
            patch.setattr(conv_flat, "FLAT_MIN_CHANNELS", 1)
        results = []
        for enabled in (False, True):
            with fast.flags(enabled=enabled):
                tensors = [None if a is None else mb.Tensor(a, requires_grad=i not in frozen)
                           for i, a in enumerate([x, weight, bias])]
                y = F.conv2d(*tensors, **params)
                y.backward(dy)
                y.backward(dy)  # twice: what was saved survives a walk
                results.append([y.data] + [None if t is None else t.grad for t in tensors])
    _assert_close(*results, dtype)


def test_scratch_stands_aside_when_freed_memory_is_kept(monkeypatch):
    scratch.release()
    monkeypatch.setattr(allocator, "freed_memory_kept", lambda: True)
    buffer = np.empty((256, 256), np.float32)
    scratch.give(buffer)
    assert scratch.held_bytes() == 0 and scratch.take((256, 256), np.float32) is not buffer


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_starts_with_an_empty_pool(monkeypatch):
    import os

    monkeypatch.setattr(allocator, "freed_memory_kept", lambda: False)
    scratch.release()
    scratch.give(np.empty((256, 256), np.float32))
    assert scratch.held_bytes() > 0
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        os._exit(0 if scratch.held_bytes() == 0 and scratch.take((4,), np.float32).shape == (4,) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    scratch.release()


def test_freed_memory_counts_as_kept_from_the_environment_too(monkeypatch):
    """minibam bench --allocator kept starts each side with glibc's environment variables:
    the kernels must then keep their arrays as with keep_freed_memory()."""
    monkeypatch.setattr(allocator, "_tuned", False)
    for name in allocator.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert not allocator.freed_memory_kept()
    for name, value in allocator.ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    assert allocator.freed_memory_kept()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")  # glibc's default: the heap is trimmed
    assert not allocator.freed_memory_kept()


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=40))
def test_scratch_bookkeeping_under_any_sequence_of_takes_and_gives(ops):
    """The pool's byte count matches what it holds, stays within its bound, and no
    sequence of takes and gives fails (a key emptied by a take, then an eviction, once
    raised IndexError in a notebook)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(allocator, "freed_memory_kept", lambda: False)
        patch.setattr(scratch, "LIMIT_BYTES", 3 * (1 << 16) * 4)
        scratch.release()
        out: list[np.ndarray] = []
        for is_take, size in ops:
            shape = ((1 << 16) * (size + 1) // 2,)
            if is_take or not out:
                out.append(scratch.take(shape, np.float32))
            else:
                scratch.give(out.pop(size % len(out)))
            held = sum(a.nbytes for arrays in scratch._pool.values() for a in arrays)
            assert held == scratch.held_bytes() <= scratch.LIMIT_BYTES
            assert all(scratch._pool.values())  # no empty lists left behind
        scratch.release()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_bam_whose_dilated_convolutions_take_the_regions_matches_the_plain_path(dtype):
    """End to end: BAM(128, r=16) at 14 x 14 (8 hidden channels, a third of the products
    with padding zeros: the regions), fast path = plain path, output and every gradient.
    The parameters' gradients are compared on the scale of the largest of them: a conv
    bias followed by batch norm has a true gradient of 0, so its computed value is only
    round-off of sums of much larger terms, in either order."""
    from minibam.backends.conv import _path
    from minibam.modules.bam import random_bam

    assert _path(8, 14, 14, geometry("t", 14, 14, 3, 1, 4, 4), np.dtype(dtype).itemsize) == "regions"
    bam = random_bam(128, 16, seed=3, dtype=np.dtype(dtype))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 128, 14, 14)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for enabled in (False, True):
        with fast.flags(enabled=enabled):
            bam.zero_grad()
            xt = mb.Tensor(x, requires_grad=True)
            y = bam(xt)
            y.backward(dy)
            results.append([y.data, xt.grad] + [p.grad.copy() for p in bam.parameters()])
    plain, quick = results
    _assert_close(plain[:2], quick[:2], dtype)
    scale = max(float(np.max(np.abs(g))) for g in plain[2:])
    for p, q in zip(plain[2:], quick[2:], strict=True):
        np.testing.assert_allclose(q, p, rtol=0, atol=TOL[dtype] * scale)
