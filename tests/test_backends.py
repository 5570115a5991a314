"""The fast path (minibam/backends) against the plain path (minibam/ops), kernel by kernel.

Each fast kernel states the tolerance it keeps against the plain op's mathematics; the
hypothesis cases draw shapes, strides, paddings, dilations and dtypes, always with a
random upstream gradient. Also: the switch itself, and that ``import minibam`` leaves the
host process alone.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minibam as mb
from minibam import functional as F
from minibam.backends import accumulate, conv_flat, fast

ROOT = Path(__file__).resolve().parents[1]

# Tolerance of every fast kernel against the plain op, relative to the largest value of
# the compared array, per dtype: the kernels reorder sums (blocks, BLAS calls of other
# shapes) and form the sigmoid of a sum from two exps, so they agree to round-off, not
# to the bit.
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _both_paths(fn, arrays, upstream):
    """fn's output and every input's gradient, on the plain path and on the fast path."""
    results = []
    for enabled in (False, True):
        with fast.flags(enabled=enabled):
            tensors = [None if a is None else mb.Tensor(a, requires_grad=True) for a in arrays]
            y = fn(*tensors)
            y.backward(upstream)
            results.append([y.data] + [None if t is None else t.grad for t in tensors])
    return results


def _assert_close(plain, quick, dtype):
    for p, q in zip(plain, quick, strict=True):
        if p is None:
            continue
        assert q.dtype == p.dtype and q.shape == p.shape
        scale = max(float(np.max(np.abs(p))), 1.0) if p.size else 1.0
        np.testing.assert_allclose(q, p, rtol=0, atol=TOL[dtype] * scale)


@st.composite
def combine_cases(draw):
    n, c, h, w = (draw(st.integers(1, k)) for k in (3, 9, 7, 7))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    arrays = [rng.standard_normal(s).astype(dtype) * dtype(scale)
              for s in ((n, c, h, w), (n, c, 1, 1), (n, 1, h, w))]
    return arrays, rng.standard_normal((n, c, h, w)).astype(dtype), dtype, draw(st.sampled_from(["sum", "product"]))


@settings(max_examples=40, deadline=None)
@given(case=combine_cases(), block=st.sampled_from([7, 64, 1 << 16]))
def test_fast_combine_matches_the_plain_op(case, block):
    """backends/combine.py (blocks, factorised sigmoid, gemv sums) = ops/attention.py."""
    arrays, dy, dtype, combine = case
    with pytest.MonkeyPatch.context() as patch:
        from minibam.backends import combine as fast_combine

        patch.setattr(fast_combine, "BLOCK_ELEMENTS", block)
        plain, quick = _both_paths(lambda x, mc, ms: F.bam_combine(x, mc, ms, combine), arrays, dy)
    _assert_close(plain, quick, dtype)


@st.composite
def conv_cases(draw):
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 9))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 9))
    if draw(st.booleans()):  # BAM's kinds: stride 1 (flat and correlation paths), 1x1
        stride = (1, 1)
    return conv_arrays(draw, (n, c, h, w), (o, c, kh, kw), dict(stride=stride, padding=padding, dilation=dilation))


def conv_arrays(draw, x_shape, w_shape, params):
    """x, weight, an optional bias of a drawn dtype, the params, the dtype and the rng."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype) if draw(st.booleans()) else None
    return x, weight, bias, params, dtype, rng


@settings(max_examples=60, deadline=None)
@given(case=conv_cases(), force_flat=st.booleans())
def test_fast_conv_matches_the_plain_op(case, force_flat):
    """backends/conv.py (1x1 without im2col, the flat layout, the input gradient as a
    correlation) = ops/conv.py's im2col and col2im."""
    x, weight, bias, params, dtype, rng = case
    out = F.conv2d(mb.Tensor(x), mb.Tensor(weight), None, **params).shape
    dy = rng.standard_normal(out).astype(dtype)
    with pytest.MonkeyPatch.context() as patch:
        if force_flat:
            patch.setattr(conv_flat, "FLAT_MAX_WASTE", float("inf"))
            patch.setattr(conv_flat, "FLAT_MIN_CHANNELS", 1)
        plain, quick = _both_paths(lambda x, w, b: F.conv2d(x, w, b, **params), [x, weight, bias], dy)
    _assert_close(plain, quick, dtype)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]),
       special=st.sampled_from([None, np.inf, -np.inf, np.nan]))
def test_fast_relu_backward_equals_the_plain_one_to_the_bit(seed, dtype, special):
    """backends/activation.py's multiply by the mask = ops/activation.py's where, also
    where the upstream gradient holds inf or nan over zeros of the output."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    x[0, 0, :2] = 0.0
    dy = rng.standard_normal(x.shape).astype(dtype)
    if special is not None:
        dy[0, 0, 0] = special
    plain, quick = _both_paths(lambda t: F.relu(t), [x], dy)
    for p, q in zip(plain, quick, strict=True):
        np.testing.assert_array_equal(q, p)


def _graph(x, w):
    """A graph where tensors receive several gradients, one of them twice from one op."""
    h = (x @ w).relu()
    return (h * h + h + x.sum(axis=1, keepdims=True) * 2.0 + h.mean()) * 0.5


@pytest.mark.parametrize("split", [False, True])
def test_deferred_gradient_sums_equal_the_plain_walk_to_the_bit(split, monkeypatch):
    """backends/accumulate.py adds the same terms in the same order as the plain walk."""
    if split:  # force the blocked, threaded add_into on these small arrays
        monkeypatch.setattr(accumulate, "SPLIT_MIN_ELEMENTS", 8)
        monkeypatch.setattr(accumulate, "BLOCK_ELEMENTS", 5)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((6, 5)), rng.standard_normal((5, 5))
    dy = rng.standard_normal((6, 5))
    plain, quick = _both_paths(_graph, [x, w], dy)
    for p, q in zip(plain, quick, strict=True):
        np.testing.assert_array_equal(q, p)


def test_a_leaf_grad_never_aliases_an_array_the_caller_or_an_op_holds():
    """An owned sum may become a leaf's .grad uncopied; the caller's upstream never does."""
    for enabled in (False, True):
        with fast.flags(enabled=enabled):
            x = mb.Tensor(np.ones(3), requires_grad=True)
            dy = np.arange(3.0)
            (x * 1.0).backward(dy)
            x.grad += 1
            np.testing.assert_array_equal(dy, np.arange(3.0))
            y = x + 0.0  # Add's backward may hand the upstream straight back
            y.backward(dy)
            assert x.grad is not dy


def test_the_switch():
    import os

    # True by default; CI also runs the core suite with MINIBAM_FAST=0
    assert fast.enabled is (os.environ.get("MINIBAM_FAST", "1").strip() != "0")
    with fast.flags(enabled=False):
        assert fast.enabled is False
        assert fast.implementation(mb.ops.conv.Conv2d) is mb.ops.conv.Conv2d
        with fast.flags(enabled=True):
            assert fast.implementation(mb.ops.conv.Conv2d).__name__ == "FastConv2d"
        assert fast.enabled is False
    with pytest.raises(TypeError, match="fast.flags: enabled must be a bool"):
        with fast.flags(enabled="no"):
            pass


@pytest.mark.parametrize("value, expected", [("0", False), ("1", True), ("", True)])
def test_minibam_fast_in_the_environment(value, expected):
    code = "import minibam.backends.fast as f; print(f.enabled)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(MINIBAM_FAST=value),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected)


def test_the_graph_names_the_op_whichever_path_ran():
    for enabled in (False, True):
        with fast.flags(enabled=enabled):
            x = mb.Tensor(np.ones((1, 2, 4, 4)), requires_grad=True)
            y = F.conv2d(x, mb.Tensor(np.ones((3, 2, 1, 1))))
            assert y.grad_fn == "Conv2d"


def _env(**extra):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MINIBAM_FAST"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


# A host program: its own allocator setting, then `import minibam`, then an allocation
# pattern like a training step. Reports threads, page faults and the umask.
HOST = """
import ctypes, json, os, resource, threading
import numpy as np
if {tune}:
    ctypes.CDLL(None).mallopt(-3, 64 << 20)  # the host's own M_MMAP_THRESHOLD
    ctypes.CDLL(None).mallopt(-1, 512 << 20)
if {import_minibam}:
    import minibam
    x = minibam.Tensor(np.ones((4, 4)), requires_grad=True)
    (x * x).sum().backward()
def step():
    alive = [np.ones(3 << 20) for _ in range(6)]
    del alive
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
tasks = len(os.listdir("/proc/self/task"))
print(json.dumps({{"threads": threading.active_count(), "tasks": tasks, "faults": faults}}))
"""


def _host(tune: bool, import_minibam: bool) -> dict:
    code = HOST.format(tune=tune, import_minibam=import_minibam)
    env = _env(NUMPY_MADVISE_HUGEPAGE="0", OPENBLAS_NUM_THREADS="1")
    return json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                     text=True, check=True).stdout)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc only")
def test_import_minibam_leaves_the_process_alone():
    """No thread started and no allocator setting: a host's page faults are the same with
    and without `import minibam`, whether the host tuned glibc itself or not."""
    without, with_ = _host(False, False), _host(False, True)
    assert with_["threads"] == 1 and with_["tasks"] == without["tasks"]
    # glibc's defaults: every large array faults again (thousands of faults) with or
    # without minibam; a tuning minibam would have brought this near zero.
    assert with_["faults"] > 0.5 * without["faults"] > 1000
    tuned_without, tuned_with = _host(True, False), _host(True, True)
    assert tuned_with["faults"] < 1000 and tuned_without["faults"] < 1000  # the host's choice holds


def test_ops_read_as_mathematics():
    """Every forward/backward in minibam/ops fits a screen (25 lines, docstring aside), and
    ops/, tensor.py and function.py import no threads and no ctypes."""
    long = []
    for path in sorted((ROOT / "minibam" / "ops").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for fn in node.body:
                    if isinstance(fn, ast.FunctionDef) and fn.name in ("forward", "backward"):
                        body = fn.body[1:] if ast.get_docstring(fn) else fn.body
                        if body[-1].end_lineno - body[0].lineno + 1 > 25:
                            long.append(f"{path.name}:{node.name}.{fn.name}")
    assert not long
    files = [*(ROOT / "minibam" / "ops").glob("*.py"), ROOT / "minibam" / "tensor.py", ROOT / "minibam" / "function.py"]
    for path in files:
        text = path.read_text()
        for banned in ("threading", "concurrent", "ctypes", "multiprocessing", "backends.threads"):
            assert f"import {banned}" not in text and f"from {banned}" not in text, (path, banned)


class _Ctx:
    needs_input_grad = (True, True, True)

    def save_for_backward(self, *arrays):
        self.saved = arrays


# The factorised sigmoid's stated bound, in units of round-off (eps / 2), relative to a
# long-double sigmoid of the exact sum: measured over half a million values per case at
# BAM's range (batch-normalised maps of scale 1 and 5).
SIGMOID_UNITS = {np.float32: 8.0, np.float64: 6.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_the_factorised_sigmoid_over_half_a_million_values(dtype, scale):
    from minibam.backends.combine import FastBamCombine, factorises

    rng = np.random.default_rng(int(scale))
    mc = (scale * rng.standard_normal((8, 64, 1, 1))).astype(dtype)
    ms = (scale * rng.standard_normal((8, 1, 32, 32))).astype(dtype)
    assert factorises(mc, ms, dtype)
    ctx = _Ctx()
    FastBamCombine.forward(ctx, np.ones((8, 64, 32, 32), dtype), mc, ms, "sum")
    exact = 1 / (1 + np.exp(-(mc.astype(np.longdouble) + ms.astype(np.longdouble))))
    units = np.abs(ctx.saved[3] - exact) / exact / (np.finfo(dtype).eps / 2)
    assert units.max() <= SIGMOID_UNITS[dtype], units.max()
