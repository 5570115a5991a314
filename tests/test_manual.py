"""minibam.manual: the hand-written BAM forward/backward against PyTorch and finite differences."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from minibam import manual

torch = pytest.importorskip("torch")
from torch_bam import random_params, run_reference  # noqa: E402  (needs torch)

VARIANTS = ("paper", "official")
RTOL = 1e-9


def assert_close(actual, expected, scale, name):
    """rtol 1e-9, with an absolute floor at round-off of the pass's gradient scale.

    The floor matters for gradients that are exactly zero in exact arithmetic (a bias
    right before a training-mode batch norm), where only round-off is left to compare.
    """
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-10 * scale, err_msg=name)


@st.composite
def bam_cases(draw):
    hidden, r = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    assume(H != W)
    return {
        "N": draw(st.integers(2, 4)), "C": hidden * r, "r": r, "H": H, "W": W,
        "dilation": draw(st.integers(1, 4)), "n": draw(st.integers(0, 2)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def make_case(case, variant):
    rng = np.random.default_rng(case["seed"])
    params = random_params(case["C"], case["r"], case["n"], variant, rng)
    shape = (case["N"], case["C"], case["H"], case["W"])
    return params, rng.normal(size=shape), rng.normal(size=shape)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
@given(case=bam_cases())
def test_matches_torch(case, variant, training):
    params, x, dy = make_case(case, variant)
    params_before, x_before = copy.deepcopy(params), x.copy()

    y, cache = manual.bam_forward(x, params, variant, training, dilation_val=case["dilation"])
    grads = manual.bam_backward(dy, cache)
    ref = run_reference(params, x, dy, variant, training, dilation_val=case["dilation"])

    scale = max(1.0, *(np.abs(g).max() for g in [ref["dx"], *ref["grads"].values()]))
    assert_close(y, ref["y"], np.abs(ref["y"]).max(), "y")
    assert_close(grads["x"], ref["dx"], scale, "dx")
    # exactly the parameters (weights and biases, no buffers), in state_dict order
    assert list(grads) == ["x", *ref["grads"]]
    for name, expected in ref["grads"].items():
        assert_close(grads[name], expected, scale, name)
    assert cache["running"].keys() == ref["running"].keys()
    for name, expected in ref["running"].items():
        if name.endswith("num_batches_tracked"):
            assert cache["running"][name] == expected, name
        else:
            assert_close(cache["running"][name], expected, np.abs(expected).max(), name)

    np.testing.assert_array_equal(x, x_before)
    for name, value in params_before.items():
        np.testing.assert_array_equal(params[name], value, err_msg=f"{name} was mutated")


def numeric_grad(fn, arrays, name, eps=1e-6):
    """Central differences of the scalar fn(arrays) w.r.t. every element of arrays[name]."""
    grad = np.zeros_like(arrays[name])
    for idx in np.ndindex(grad.shape):
        values = []
        for step in (eps, -eps):
            shifted = dict(arrays)  # manual never mutates, so a fresh dict per step is enough
            shifted[name] = arrays[name].copy()
            shifted[name][idx] += step
            values.append(fn(shifted))
        grad[idx] = (values[0] - values[1]) / (2 * eps)
    return grad


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_finite_differences(variant, training):
    rng = np.random.default_rng(7)
    params = random_params(4, 2, 1, variant, rng)
    x, dy = rng.normal(size=(3, 4, 3, 2)), rng.normal(size=(3, 4, 3, 2))

    def loss(arrays):
        inputs = dict(arrays)
        y, _ = manual.bam_forward(inputs.pop("x"), inputs, variant, training, dilation_val=2)
        return float(np.sum(y * dy))

    _, cache = manual.bam_forward(x, params, variant, training, dilation_val=2)
    grads = manual.bam_backward(dy, cache)
    arrays = {"x": x, **params}
    for name in grads:
        numeric = numeric_grad(loss, arrays, name)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_official_and_paper_differ_in_the_combination():
    """Same shared weights, different closing layers and combination: outputs must differ."""
    rng = np.random.default_rng(1)
    paper = random_params(4, 2, 1, "paper", rng)
    official = {k: v for k, v in paper.items() if "_bn_final" not in k}
    x = rng.normal(size=(2, 4, 3, 5))
    y_paper, _ = manual.bam_forward(x, paper, "paper")
    y_official, _ = manual.bam_forward(x, official, "official")
    assert not np.allclose(y_paper, y_official)


def test_running_buffers_updated_with_momentum_and_unbiased_variance():
    rng = np.random.default_rng(2)
    params = random_params(4, 2, 0, "paper", rng)
    x = rng.normal(size=(3, 4, 2, 5))
    _, cache = manual.bam_forward(x, params, "paper", training=True)
    # the channel branch's first BN sees z0 = W0 gap + b0 over a batch of 3
    z0 = x.mean(axis=(2, 3)) @ params["channel_att.gate_c.gate_c_fc_0.weight"].T
    z0 += params["channel_att.gate_c.gate_c_fc_0.bias"]
    name = "channel_att.gate_c.gate_c_bn_1"
    np.testing.assert_allclose(
        cache["running"][f"{name}.running_var"],
        0.9 * params[f"{name}.running_var"] + 0.1 * z0.var(axis=0, ddof=1), rtol=1e-12,
    )
    np.testing.assert_allclose(
        cache["running"][f"{name}.running_mean"],
        0.9 * params[f"{name}.running_mean"] + 0.1 * z0.mean(axis=0), rtol=1e-12,
    )
    assert cache["running"][f"{name}.num_batches_tracked"] == params[f"{name}.num_batches_tracked"] + 1


def test_eval_returns_copies_of_buffers_and_allows_batch_of_one():
    rng = np.random.default_rng(3)
    params = random_params(4, 2, 1, "paper", rng)
    y, cache = manual.bam_forward(rng.normal(size=(1, 4, 3, 2)), params, training=False)
    assert y.shape == (1, 4, 3, 2)
    for name, value in cache["running"].items():
        np.testing.assert_array_equal(value, params[name])
        assert not np.shares_memory(value, params[name])


def test_num_batches_tracked_may_be_left_out():
    rng = np.random.default_rng(4)
    params = {k: v for k, v in random_params(4, 2, 1, "official", rng).items()
              if not k.endswith("num_batches_tracked")}
    _, cache = manual.bam_forward(rng.normal(size=(2, 4, 3, 2)), params, "official")
    assert cache["running"]["spatial_att.gate_s.gate_s_bn_di_0.num_batches_tracked"] == 1


def test_float32_stays_float32():
    rng = np.random.default_rng(5)
    params64 = random_params(4, 2, 1, "paper", rng)
    x64, dy64 = rng.normal(size=(2, 4, 3, 5)), rng.normal(size=(2, 4, 3, 5))
    params32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in params64.items()}
    y32, cache32 = manual.bam_forward(x64.astype(np.float32), params32)
    grads32 = manual.bam_backward(dy64.astype(np.float32), cache32)
    y64, cache64 = manual.bam_forward(x64, params64)
    grads64 = manual.bam_backward(dy64, cache64)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    for name, g in grads32.items():
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, grads64[name], rtol=1e-3, atol=1e-4, err_msg=name)


def test_sigmoid_does_not_overflow():
    """A huge closing BN scale drives s to about +-1e4; the sigmoid must stay finite and silent."""
    rng = np.random.default_rng(6)
    params = random_params(4, 2, 1, "paper", rng)
    params["spatial_att.gate_s.gate_s_bn_final.weight"] = np.array([1e4])
    x = rng.normal(size=(2, 4, 3, 5))
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
        y, cache = manual.bam_forward(x, params)
        grads = manual.bam_backward(np.ones_like(x), cache)
    assert np.isfinite(y).all() and all(np.isfinite(g).all() for g in grads.values())
    assert cache["M"].min() == 0.0 and cache["M"].max() == 1.0


def _params():
    return random_params(4, 2, 1, "paper", np.random.default_rng(0))


def _without(key):
    params = _params()
    del params[key]
    return params


@pytest.mark.parametrize(
    "x_shape, params, kwargs, match",
    [
        ((4, 3, 3), _params(), {}, r"4-D .* \(4, 3, 3\)"),
        ((2, 6, 3, 3), _params(), {}, r"x has 6 channels .* gate_channel = 4"),
        ((1, 4, 3, 3), _params(), {}, r"batch of at least 2"),
        ((2, 4, 3, 3), _without("spatial_att.gate_s.gate_s_bn_di_0.running_var"), {},
         r"missing keys \['spatial_att.gate_s.gate_s_bn_di_0.running_var'\]"),
        ((2, 4, 3, 3), _params(), {"variant": "official"}, r"unexpected keys \[.*gate_c_bn_final"),
        ((2, 4, 3, 3), _without("spatial_att.gate_s.gate_s_conv_di_0.weight"), {},
         r"unexpected keys \[.*gate_s_conv_di_0.bias"),
        ((2, 4, 3, 3), {**_params(), "spatial_att.gate_s.gate_s_conv_di_0.weight": np.ones((2, 2, 1, 1))},
         {}, r"gate_s_conv_di_0.weight: got \(2, 2, 1, 1\), expected \(2, 2, 3, 3\)"),
        ((2, 4, 3, 3), _params(), {"variant": "sum"}, r"'paper' or 'official'"),
        ((2, 4, 3, 3), _params(), {"dilation_val": 0}, r"dilation_val"),
    ],
)
def test_errors(x_shape, params, kwargs, match):
    with pytest.raises(ValueError, match=match):
        manual.bam_forward(np.zeros(x_shape), params, **kwargs)


def test_backward_rejects_wrong_dy_shape():
    x = np.random.default_rng(0).normal(size=(2, 4, 3, 3))
    _, cache = manual.bam_forward(x, _params())
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 3\)"):
        manual.bam_backward(np.zeros((2, 4, 3)), cache)


# --- the package a student reads (issue 20) --------------------------------------------


def test_manual_exports_no_underscore_names_and_its_helpers_are_public():
    assert not [name for name in manual.__all__ if name.startswith("_")]
    assert not [name for name in dir(manual) if name.startswith("_") and not name.startswith("__")
                and name not in ("_validate",)]
    for name in ("linear_forward", "conv_backward", "bn_relu_backward", "sigmoid", "im2col"):
        assert callable(getattr(manual, name)) and getattr(manual.layers, name) is getattr(manual, name)
    assert manual.layout.bam_layers(8, 2, 1, "paper")[manual.FC_0]["weight"] == (2, 8)


def test_bam_by_hand_is_mathematics_and_manual_imports_only_numpy():
    import inspect
    import sys

    from minibam.manual import bam

    source = inspect.getsource(bam)
    # The checks live in manual/_validate.py: bam.py raises nothing about its arguments
    # beyond the backward's cache and dy.
    assert source.count("raise ") <= 2 and "def _check" not in source
    assert len(source.splitlines()) <= 220  # one or two screens, docstring included
    # Every module of the package imports NumPy, the standard library and itself only.
    import ast
    from pathlib import Path

    for path in Path(bam.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert name.startswith("minibam.manual") or top == "numpy" or (
                    top in sys.stdlib_module_names or top == "__future__"), (path.name, name)
