"""nn.SqueezeExcitation: gradients by finite differences and against PyTorch float64 code
written here (no torchvision), torchvision's state_dict names, clear errors, and its
place in ``minibam check``, ``reference`` and ``compare`` through its description."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minibam as mb
from minibam import nn
from minibam.checks import all_cases, run_case
from minibam.cli import main


def torch_se(torch, x, state, upstream):
    """SE as y = x * sigmoid(W2 relu(W1 mean(x) + b1) + b2) in plain torch ops, float64;
    returns y and the gradients of <upstream, y> for x and every parameter."""
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    xt = torch.tensor(x, requires_grad=True)
    z = xt.mean(dim=(2, 3))  # (N, C)
    w1, w2 = leaves["fc1.weight"][:, :, 0, 0], leaves["fc2.weight"][:, :, 0, 0]
    hidden = torch.relu(z @ w1.T + leaves["fc1.bias"])
    s = torch.sigmoid(hidden @ w2.T + leaves["fc2.bias"])
    y = xt * s[:, :, None, None]
    y.backward(torch.from_numpy(upstream))
    return y.detach().numpy(), {"x": xt.grad.numpy(), **{k: t.grad.numpy() for k, t in leaves.items()}}


def minibam_se(module, x, upstream):
    xt = mb.Tensor(x, requires_grad=True)
    y = module(xt)
    y.backward(upstream)
    return y.data, {"x": xt.grad, **{k: p.grad for k, p in module.named_parameters()}}


def test_state_dict_names_and_shapes_are_torchvisions():
    se = nn.SqueezeExcitation(8, 3)
    assert {k: v.shape for k, v in se.state_dict().items()} == {
        "fc1.weight": (3, 8, 1, 1), "fc1.bias": (3,), "fc2.weight": (8, 3, 1, 1), "fc2.bias": (8,)}
    assert "input_channels=8, squeeze_channels=3" in repr(se)


def test_forward_is_the_formula():
    rng = np.random.default_rng(0)
    se = nn.SqueezeExcitation(6, 2)
    x = rng.standard_normal((3, 6, 4, 5))
    w1, b1 = se.fc1.weight.data[:, :, 0, 0], se.fc1.bias.data
    w2, b2 = se.fc2.weight.data[:, :, 0, 0], se.fc2.bias.data
    s = 1 / (1 + np.exp(-(np.maximum(x.mean(axis=(2, 3)) @ w1.T + b1, 0) @ w2.T + b2)))
    np.testing.assert_allclose(se(mb.Tensor(x)).data, x * s[:, :, None, None], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("shape, squeeze", [((2, 4, 3, 5), 2), ((1, 3, 1, 1), 5), ((3, 6, 4, 2), 6)])
def test_gradients_by_finite_differences(shape, squeeze):
    mb.manual_seed(1)
    se = nn.SqueezeExcitation(shape[1], squeeze)
    x = mb.Tensor(np.random.default_rng(2).standard_normal(shape), requires_grad=True)
    params = list(se.parameters())

    def fn(x, *_):
        return se(x)

    assert mb.gradcheck(fn, [x, *params])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 5), w=st.integers(1, 5),
       squeeze=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_agrees_with_pytorch_float64_on_any_shape(n, c, h, w, squeeze, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    mb.manual_seed(seed)
    se = nn.SqueezeExcitation(c, squeeze)
    x, upstream = rng.standard_normal((n, c, h, w)), rng.standard_normal((n, c, h, w))
    x_before = x.copy()
    y, grads = minibam_se(se, x, upstream)
    y_ref, grads_ref = torch_se(torch, x, se.state_dict(), upstream)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-13)
    for key, value in grads_ref.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    assert np.array_equal(x, x_before)


def test_empty_batch_and_float32():
    se = nn.SqueezeExcitation(4, 2)
    x = mb.Tensor(np.zeros((0, 4, 3, 3)), requires_grad=True)
    y = se(x)
    y.backward(np.zeros(y.shape))
    assert y.shape == (0, 4, 3, 3) and x.grad.shape == (0, 4, 3, 3)
    se.float()
    assert se(mb.Tensor(np.ones((2, 4, 3, 3), np.float32))).dtype == np.float32


@pytest.mark.parametrize("args, error, words", [
    ((0, 2), ValueError, "input_channels"),
    ((4, 0), ValueError, "squeeze_channels"),
    ((4.0, 2), TypeError, "input_channels"),
    ((4, True), TypeError, "squeeze_channels"),
])
def test_bad_construction_is_named(args, error, words):
    with pytest.raises(error, match=words) as info:
        nn.SqueezeExcitation(*args)
    assert "SqueezeExcitation" in str(info.value)


@pytest.mark.parametrize("x, words", [
    (np.ones((2, 4, 3)), "must be 4-D"),
    (np.ones((2, 5, 3, 3)), "input has 5 channels .* input_channels=4"),
    (np.ones((2, 4, 0, 3)), "empty"),
])
def test_bad_input_is_named(x, words):
    with pytest.raises(ValueError, match=words):
        nn.SqueezeExcitation(4, 2)(mb.Tensor(x))


def test_load_state_dict_of_the_same_names():
    a, b = nn.SqueezeExcitation(6, 3), nn.SqueezeExcitation(6, 3)
    b.load_state_dict(a.state_dict())
    x = mb.Tensor(np.random.default_rng(0).standard_normal((2, 6, 3, 3)))
    np.testing.assert_array_equal(a(x).data, b(x).data)
    with pytest.raises(mb.nn.StateDictError, match="fc1.weight"):
        nn.SqueezeExcitation(6, 2).load_state_dict(a.state_dict())


# ------------------------------------------------- through its description, no CLI change
def test_minibam_check_has_se_rows_that_pass_and_can_fail(monkeypatch):
    torch = pytest.importorskip("torch")
    cases = [c for c in all_cases() if c.op == "SE"]
    assert cases and all(c.torch is not None for c in cases)
    result = run_case(cases[0], seed=0, torch=torch)
    assert result.passed and result.fd_rows and result.torch_rows
    assert {r.name for r in result.torch_rows} >= {"y", "dx", "dfc1.weight", "dfc2.bias"}
    from minibam.ops.activation import Sigmoid

    original = Sigmoid.backward
    monkeypatch.setattr(Sigmoid, "backward", staticmethod(lambda ctx, g: tuple(0.9 * a for a in original(ctx, g))))
    assert not run_case(cases[0], seed=0, torch=torch).passed


def test_check_json_lists_se(capsys):
    assert main(["check", "-k", "SE", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    se_rows = [row for row in report["rows"] if row["op"] == "SE"]
    assert report["passed"] and se_rows and all(row["fd"] for row in se_rows)


@pytest.mark.parametrize("extra", [(), ("--eval", "--dtype", "float32", "--squeeze-channels", "3")])
def test_reference_then_compare(tmp_path, capsys, extra):
    path = tmp_path / "se.npz"
    code = main(["reference", "--module", "se", "--channels", "8", "--shape", "3,4,5", "--out", str(path),
                 *extra])
    out = capsys.readouterr().out
    assert code == 0 and "SqueezeExcitation C=8" in out
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    squeeze = 3 if extra else 2
    assert arrays["param.fc1.weight"].shape == (squeeze, 8, 1, 1) and "grad.fc2.bias" in arrays
    assert str(arrays["meta.format"]) == "minibam-se-reference"
    assert main(["compare", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["module"] == "se"
    assert {r["name"] for r in report["rows"]} == {"y", "dx", "grad.fc1.weight", "grad.fc1.bias",
                                                    "grad.fc2.weight", "grad.fc2.bias"}
    arrays["grad.fc1.bias"] = arrays["grad.fc1.bias"] * 1.01
    np.savez(path, **arrays)
    assert main(["compare", str(path)]) == 1
    assert "differs: grad.fc1.bias" in capsys.readouterr().out


def test_compare_accepts_a_file_written_by_pytorch_without_meta(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    state = {"fc1.weight": rng.standard_normal((3, 6, 1, 1)), "fc1.bias": rng.standard_normal(3),
             "fc2.weight": rng.standard_normal((6, 3, 1, 1)), "fc2.bias": rng.standard_normal(6)}
    x, dy = rng.standard_normal((2, 6, 5, 4)), rng.standard_normal((2, 6, 5, 4))
    y, grads = torch_se(torch, x, state, dy)
    arrays = {"x": x, "dy": dy, "y": y, "dx": grads["x"], **{f"param.{k}": v for k, v in state.items()},
              **{f"grad.{k}": grads[k] for k in state}}
    path = tmp_path / "torch_se.npz"
    np.savez(path, **arrays)
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "SqueezeExcitation C=6, S=3" in out and "note:" not in out


def test_reference_refuses_se_options_for_a_bam(tmp_path, capsys):
    code = main(["reference", "--channels", "8", "--shape", "2,3,4", "--reduction", "4",
                 "--squeeze-channels", "2", "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "--squeeze-channels is SqueezeExcitation's option: add --module se" in err
