"""The reliability promises of docs/guarantees.md, one test (or a few) per item of issue 13.

Threads, interrupted writes and hostile archives are in test_faults.py; the fuzz of the
whole public surface is in test_fuzz.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import minibam as mb
from minibam import functional as F
from minibam import manual, nn
from minibam.nn.module import StateDictError

RNG = np.random.default_rng(0)


def _t(shape, requires_grad=True, dtype=np.float64):
    return mb.Tensor(RNG.standard_normal(shape).astype(dtype), requires_grad=requires_grad)


# -------------------------------------------------------------- 5. empty batches (N = 0)


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "padding": 1, "dilation": 2}])
def test_conv2d_on_an_empty_batch_matches_pytorch(kwargs):
    torch = _torch()
    x, w, b = _t((0, 3, 7, 6)), _t((4, 3, 3, 3)), _t((4,))
    y = F.conv2d(x, w, b, **kwargs)
    y.backward(np.zeros(y.shape))
    tx, tw, tb = (torch.tensor(t.data, requires_grad=True) for t in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    ty.backward(torch.zeros_like(ty))
    assert y.shape == tuple(ty.shape)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        assert ours.grad.shape == tuple(theirs.grad.shape)
        np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())  # zeros


def test_pointwise_conv_and_linear_on_an_empty_batch():
    x, w = _t((0, 3, 4, 4)), _t((2, 3, 1, 1))
    y = F.conv2d(x, w)
    y.backward(np.zeros(y.shape))
    assert y.shape == (0, 2, 4, 4) and x.grad.shape == x.shape and not w.grad.any()
    x, w, b = _t((0, 5)), _t((3, 5)), _t((3,))
    y = F.linear(x, w, b)
    y.backward(np.zeros(y.shape))
    assert y.shape == (0, 3) and not w.grad.any() and not b.grad.any()


@pytest.mark.parametrize("layer, shape", [(nn.BatchNorm1d, (0, 3)), (nn.BatchNorm2d, (0, 3, 4, 5))])
def test_eval_batch_norm_on_an_empty_batch(layer, shape):
    bn = layer(3).eval()
    x = _t(shape)
    y = bn(x)
    y.backward(np.zeros(shape))
    assert y.shape == shape and x.grad.shape == shape
    np.testing.assert_array_equal(bn.weight.grad, np.zeros(3))


@pytest.mark.parametrize("layer, shape", [(nn.BatchNorm1d, (0, 3)), (nn.BatchNorm2d, (0, 3, 4, 5))])
def test_training_batch_norm_on_an_empty_batch_is_a_value_error(layer, shape):
    bn = layer(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(_t(shape))
    assert int(bn.num_batches_tracked) == 0


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_eval_bam_on_an_empty_batch(variant):
    bam = nn.BAM(8, reduction_ratio=4, variant=variant).eval()
    x = _t((0, 8, 5, 6))
    y = bam(x)
    y.backward(np.zeros(y.shape))
    assert y.shape == x.shape and x.grad.shape == x.shape
    assert all(not p.grad.any() for p in bam.parameters())
    maps = bam.attention_maps(x)
    assert maps["spatial"].shape == (0, 5, 6) and maps["attention"].shape == (0, 8, 5, 6)
    out, cache = manual.bam_forward(x.data, bam.state_dict(), variant=variant, training=False)
    grads = manual.bam_backward(np.zeros(out.shape), cache)
    assert out.shape == x.shape and grads["x"].shape == x.shape
    with pytest.raises(ValueError, match="BAM: an empty batch"):
        bam.train()(x)


@pytest.mark.parametrize("pool_types", [("avg", "max"), ("max",), ("lp", "lse")])
@pytest.mark.parametrize("no_spatial", [False, True])
def test_eval_cbam_on_an_empty_batch_by_hand_as_the_module(pool_types, no_spatial):
    cbam = nn.CBAM(8, reduction_ratio=4, pool_types=pool_types, no_spatial=no_spatial).eval()
    x = _t((0, 8, 5, 6))
    y = cbam(x)
    out, cache = manual.cbam_forward(x.data, cbam.state_dict(), pool_types, no_spatial,
                                     training=False)
    grads = manual.cbam_backward(np.zeros(out.shape), cache)
    assert out.shape == y.shape == x.shape and grads["x"].shape == x.shape
    assert all(g.shape == p.shape and not g.any()
               for (name, p), g in zip(cbam.named_parameters(), list(grads.values())[1:], strict=True))


# ---------------------------------------------------- 6. integer hyper-parameters


BAD_INTS = [1.7, 2.0, np.array(1.7), np.array(2), np.float64(2.0), True, np.bool_(True), "2", None]


@pytest.mark.parametrize("bad", BAD_INTS, ids=repr)
@pytest.mark.parametrize("argument", ["stride", "padding", "dilation"])
def test_conv2d_integer_hyper_parameters_refuse_non_integers(argument, bad):
    with pytest.raises(TypeError, match=f"conv2d: {argument} must be an int"):
        F.conv2d(_t((1, 1, 5, 5)), _t((1, 1, 2, 2)), **{argument: bad})


@pytest.mark.parametrize("bad", BAD_INTS, ids=repr)
@pytest.mark.parametrize(
    "build, name",
    [
        (lambda v: nn.Conv2d(1, 1, v), "Conv2d: kernel_size"),
        (lambda v: nn.Conv2d(v, 1, 3), "Conv2d: in_channels"),
        (lambda v: nn.Linear(2, v), "Linear: out_features"),
        (lambda v: nn.BatchNorm2d(v), "BatchNorm2d: num_features"),
        (lambda v: nn.BAM(16, reduction_ratio=v), "BAM: reduction_ratio"),
        (lambda v: nn.BAM(16, dilation_conv_num=v), "BAM: dilation_conv_num"),
        (lambda v: nn.BAM(16, dilation_val=v), "BAM: dilation_val"),
        (lambda v: F.im2col(np.ones((1, 1, 4, 4)), v), "im2col: kernel_size"),
        (lambda v: F.flatten(_t((2, 3)), v), "flatten: start_dim"),
    ],
)
def test_constructors_and_ops_refuse_non_integers(build, name, bad):
    with pytest.raises(TypeError, match=name):
        build(bad)


def test_numpy_integers_are_accepted():
    conv = nn.Conv2d(np.int64(2), np.int32(3), np.int16(3), stride=np.uint8(2))
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2)
    assert type(conv.in_channels) is int


# ------------------------------------------------------------ 7. num_batches_tracked


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30, 3.7, -1e30, 2.0**64])
def test_load_state_dict_refuses_counters_that_are_not_whole_int64(bad):
    bn = nn.BatchNorm1d(2)
    state = bn.state_dict()
    state["num_batches_tracked"] = np.array(bad)
    state["running_mean"] = np.array([5.0, 6.0])
    with pytest.raises(StateDictError, match="num_batches_tracked"):
        bn.load_state_dict(state)
    assert int(bn.num_batches_tracked) == 0 and not bn.running_mean.data.any()  # nothing loaded


def test_load_state_dict_accepts_whole_float_counters():
    bn = nn.BatchNorm1d(2)
    state = bn.state_dict()
    state["num_batches_tracked"] = np.array(12.0)
    bn.load_state_dict(state)
    assert bn.num_batches_tracked.dtype == np.int64 and int(bn.num_batches_tracked) == 12


# ------------------------------------------------------ 8. manual.bam_forward's checks


def _manual_case():
    bam = nn.BAM(8, reduction_ratio=4)
    return RNG.standard_normal((2, 8, 4, 4)), bam.state_dict()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"eps": -1.0}, ValueError, "eps must be positive"),
        ({"eps": 0.0}, ValueError, "eps must be positive"),
        ({"eps": float("nan")}, ValueError, "eps must be positive"),
        ({"eps": "a"}, TypeError, "eps must be a real number"),
        ({"eps": True}, TypeError, "eps must be a real number"),
        ({"eps": -1.0, "training": False}, ValueError, "eps must be non-negative"),
        ({"dilation_val": 2.0}, TypeError, "dilation_val must be an int"),
    ],
)
def test_manual_forward_checks_eps_like_batch_norm(kwargs, error, match):
    x, params = _manual_case()
    with pytest.raises(error, match=f"bam_forward: {match}"):
        manual.bam_forward(x, params, **kwargs)
    fn_error = error if "eps" in kwargs and kwargs["eps"] is not True else None
    if fn_error is not None and kwargs.get("training", True):
        with pytest.raises(fn_error):
            F.batch_norm(mb.Tensor(x), None, None, training=True, eps=kwargs["eps"])


def test_manual_refuses_complex_and_object_input():
    x, params = _manual_case()
    with pytest.raises(TypeError, match="bam_forward: x must hold real numbers, got dtype complex128"):
        manual.bam_forward(x + 1j, params)
    key = "channel_att.gate_c.gate_c_fc_0.weight"
    with pytest.raises(TypeError, match=f"params\\['{key}'\\] must hold real numbers"):
        manual.bam_forward(x, {**params, key: params[key].astype(object)})
    with pytest.raises(TypeError, match="bam_forward: params must be a dict"):
        manual.bam_forward(x, None)
    y, cache = manual.bam_forward(x, params)
    with pytest.raises(TypeError, match="bam_backward: dy must hold real numbers"):
        manual.bam_backward(y.astype(complex), cache)
    with pytest.raises(TypeError, match="bam_backward: cache must be the dict returned by bam_forward"):
        manual.bam_backward(y, None)


# -------------------------------------------------------------- 9. no raw messages


X4 = np.ones((2, 3, 4, 4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: F.sum(mb.Tensor(X4), axis=1.5), TypeError, "sum: axis must be an int"),
        (lambda: F.flatten(mb.Tensor(X4), "a"), TypeError, "flatten: start_dim must be an int"),
        (lambda: F.cross_entropy(mb.Tensor(np.ones((2, 3))), np.array(["a", "b"])), TypeError,
         "cross_entropy: targets must be integer class indices"),
        (lambda: F.cross_entropy(mb.Tensor(np.ones((0, 0))), np.zeros(0, int)), ValueError,
         r"cross_entropy: logits must have at least one class"),
        (lambda: F.cross_entropy(mb.Tensor(np.ones((2, 0))), np.zeros(2, int)), ValueError,
         r"cross_entropy: logits must have at least one class"),
        (lambda: mb.gradcheck(None, [mb.Tensor(1.0, requires_grad=True)]), TypeError,
         "gradcheck: fn must be callable"),
        (lambda: manual.bam_backward(np.ones(3), None), TypeError, "bam_backward: cache"),
        (lambda: nn.BAM(16, dilation_conv_num=float("inf")), TypeError,
         "BAM: dilation_conv_num must be an int"),
        (lambda: nn.BAMNet(widths=3), TypeError, "BAMNet: widths"),
        # fuzz findings: the message named BAM's gate_channel, not BAMNet's widths
        (lambda: nn.BAMNet(widths=(1, 8), reduction_ratio=2), ValueError,
         r"BAMNet: widths\[0\]=1 .* not divisible by reduction_ratio=2"),
        (lambda: nn.BAMNet(widths=(8, 2, 8), reduction_ratio=4, attention="cbam"), ValueError,
         r"BAMNet: widths\[1\]=2 .* smaller than reduction_ratio=4"),
        (lambda: F.conv2d(mb.Tensor(X4), mb.Tensor(np.ones((1, 3, 3, 3))), padding=10**12),
         ValueError, "conv2d: the padded input of shape .*padding.* more than the .* GiB of memory available"),
        (lambda: F.im2col(X4, 3, padding=10**9), ValueError, "im2col: the padded input"),
        (lambda: F.sum(mb.Tensor(X4), keepdims="yes"), TypeError, "sum: keepdims must be a bool"),
        (lambda: nn.BAM(16, variant=np.array([1, 2])), ValueError, "BAM: variant must be one of"),
        # issue 23: a ragged list gave NumPy's "setting an array element with a sequence"
        (lambda: mb.Tensor([[1.0, 2.0], [3.0]]), ValueError,
         r"Tensor: data is a ragged nested list \(rows of different lengths\)"),
        (lambda: mb.Tensor([[1.0, [2.0]]]), ValueError, "Tensor: data is a ragged nested list"),
    ],
)
def test_formerly_raw_messages_are_clear(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------ 10. warning policy


WARNING_CASES = {
    "1/0": lambda: mb.Tensor(1.0) / mb.Tensor(0.0),
    "0/0": lambda: mb.Tensor(0.0) / mb.Tensor(0.0),
    "exp(1000)": lambda: mb.Tensor(1000.0).exp(),
    "log(0)": lambda: mb.Tensor(0.0).log(),
    "log(-1)": lambda: mb.Tensor(-1.0).log(),
    "x**-1 at 0": lambda: mb.Tensor(0.0) ** -1,
    "x**0.5 at -1": lambda: mb.Tensor(-1.0) ** 0.5,
    "sigmoid(-1000)": lambda: mb.Tensor([-1000.0, 1000.0]).sigmoid(),
    "batch_norm var 0 eps 0": lambda: F.batch_norm(
        mb.Tensor(np.ones((2, 1))), np.zeros(1), np.zeros(1), eps=0.0),
    "linear of inf": lambda: F.linear(mb.Tensor([[np.inf, -np.inf]]), mb.Tensor([[1.0, 1.0]])),
    "float32 overflow": lambda: mb.Tensor(np.float32(3e38)) * 10.0,
}


def _backward_of_sqrt_at_zero():
    x = mb.Tensor(0.0, requires_grad=True)
    (x**0.5).backward()
    return x.grad


def _manual_with_inf():
    x, params = _manual_case()
    x[0, 0, 0, 0] = np.inf
    y, cache = manual.bam_forward(x, params)
    return manual.bam_backward(np.ones_like(y), cache)["x"]


WARNING_CASES["backward of x**0.5 at 0"] = _backward_of_sqrt_at_zero
WARNING_CASES["manual BAM with an inf pixel"] = _manual_with_inf


@pytest.mark.parametrize("case", sorted(WARNING_CASES))
def test_inf_and_nan_come_back_silently_even_under_warnings_as_errors(case):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WARNING_CASES[case]()


def test_python_dash_w_error_runs_every_case():
    code = textwrap.dedent("""
        import math, numpy as np, minibam as mb
        x = mb.Tensor([0.0, 1.0, -1.0], requires_grad=True)
        y = (x / x) + (1 / x) + x.log() + (x * 1000).exp() + x ** -1 + x ** 0.5
        y.backward(np.ones(3))
        print(np.isnan(y.data).any(), np.isinf(x.grad).any() or np.isnan(x.grad).any())
        """)
    result = subprocess.run([sys.executable, "-W", "error", "-c", code],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


# ----------------------------------------------------- 11. float32 batch-norm statistics


@pytest.mark.parametrize("shape", [(256, 3), (64, 3, 8, 8)])
def test_float32_batch_norm_statistics_near_1e19_do_not_overflow(shape):
    x = (RNG.standard_normal(shape) * 1e19).astype(np.float32)
    bn = (nn.BatchNorm1d(3) if len(shape) == 2 else nn.BatchNorm2d(3)).float()
    y = bn(mb.Tensor(x))
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    x64 = x.astype(np.float64)
    m = x64.size // 3
    true_var = x64.var(axis=axes)
    assert np.all(np.isfinite(bn.running_var.data))
    np.testing.assert_allclose(bn.running_var.data, 0.9 + 0.1 * true_var * m / (m - 1), rtol=1e-5)
    expected = (x64 - x64.mean(axis=axes, keepdims=True)) / np.sqrt(x64.var(axis=axes, keepdims=True))
    np.testing.assert_allclose(y.data, expected, rtol=1e-4, atol=1e-5)
    assert y.dtype == np.float32


def test_float32_batch_norm_with_a_real_inf_still_gives_inf_or_nan():
    x = np.ones((4, 2), dtype=np.float32)
    x[0, 0] = np.inf
    bn = nn.BatchNorm1d(2).float()
    y = bn(mb.Tensor(x))
    assert not np.isfinite(y.data[:, 0]).any() and np.isfinite(y.data[:, 1]).all()


# ------------------------------------------------- 4. the CLI refuses absurd sizes


@pytest.mark.parametrize(
    "argv, option",
    [
        (["reference", "--channels", "16", "--shape", "100000,1000,1000"], "--channels/--shape"),
        (["reference", "--channels", "1000000000", "--shape", "2,4,4"], "--channels/--shape"),
        (["reference", "--channels", "16", "--shape", "2,4,4", "--dilation-conv-num", str(10**12)],
         "--channels/--shape"),
        (["bench", "--shapes", "4,16,100000,100000", "--no-torch"], "--shapes"),
        (["bench", "--shapes", "2,4,4,4", "4,64,1000000,100000", "--no-torch"], "--shapes"),
    ],
)
def test_cli_refuses_sizes_that_cannot_fit_before_allocating(tmp_path, capsys, argv, option):
    from minibam.cli import main

    out = tmp_path / "case.npz"
    if argv[0] == "reference":
        argv = [*argv, "--out", str(out)]
    code = main(argv)
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and f"error: {option}: BAM on" in stderr
    assert "GiB of memory" in stderr and not out.exists()


# ------------------------------------------- 5. an address-space limit is memory too

_UNDER_A_2_GIB_LIMIT = """
import resource, sys
limit = resource.RLIMIT_AS if sys.argv[1] == "-v" else resource.RLIMIT_DATA
resource.setrlimit(limit, (2 << 30, 2 << 30))  # ulimit -v (as the grader sets) or -d
import numpy as np
import minibam as mb
from minibam import manual, nn
# Linear(10000, 10000)'s weight alone fits (0.8 GB); with the temporaries of its
# initialisation it does not.
for build in (lambda: nn.Linear(20000, 20000), lambda: nn.Linear(10000, 10000),
              lambda: nn.Conv2d(2000, 2000, 7),
              lambda: nn.BAM(16000, reduction_ratio=2), lambda: nn.CBAM(32000, reduction_ratio=2),
              # each of the four (C,) arrays fits; all four (and a temporary) do not
              lambda: nn.BatchNorm2d(100_000_000), lambda: nn.BatchNorm1d(60_000_000),
              lambda: mb.functional.conv2d(mb.Tensor(np.zeros((1, 1, 4, 4))),
                                           mb.Tensor(np.zeros((1, 1, 3, 3))), padding=9000)):
    try:
        build()
        print("built")
    except ValueError as error:
        print("ValueError", f"limit (ulimit {sys.argv[1]})" in str(error))
    except MemoryError:
        print("MemoryError")
"""


@pytest.mark.parametrize("ulimit", ["-v", "-d"])
def test_an_address_space_limit_is_a_clear_error_not_a_memory_error(ulimit):
    result = subprocess.run([sys.executable, "-c", _UNDER_A_2_GIB_LIMIT, ulimit],
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.split("\n")[:-1] == ["ValueError True"] * 8, result.stdout + result.stderr


def _limit_address_space():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_reference_that_cannot_fit_under_an_address_space_limit_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "case.npz"
    # About 6 GiB for this case, under a 2 GiB limit on a machine with more memory free.
    result = subprocess.run(
        [sys.executable, "-m", "minibam", "reference", "--channels", "64", "--shape",
         "16,256,256", "--out", str(out)],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_address_space)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "address-space limit" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 8, 0, 3), (2, 8, 3, 0)])
def test_cbam_by_hand_refuses_an_empty_plane_as_the_module_does(shape, training):
    # It gave NumPy's "Mean of empty slice" warning (an error under -W error) and nan.
    cbam = nn.CBAM(8, reduction_ratio=4)
    with pytest.raises(ValueError, match="global_avg_pool2d: cannot pool over an empty H x W"):
        cbam.train(training)(_t(shape))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"cbam_forward: x has an empty H x W plane"):
            manual.cbam_forward(np.zeros(shape), cbam.state_dict(), training=training)
