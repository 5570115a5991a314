"""nn.CBAM and manual.cbam_forward/backward against the PyTorch CBAM in tests/torch_cbam.py,
finite differences, the released code's checkpoint names, attention maps and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minibam as mb
from minibam import manual, nn

torch = pytest.importorskip("torch")
from torch_cbam import TorchCBAM, random_params, run_reference  # noqa: E402

POOLS = ("avg", "max", "lp", "lse")
# The authors' released CBAM, as its state_dict() lists them (momentum and the missing
# conv bias are checked separately).
RELEASED_KEYS = [
    "ChannelGate.mlp.1.weight", "ChannelGate.mlp.1.bias",
    "ChannelGate.mlp.3.weight", "ChannelGate.mlp.3.bias",
    "SpatialGate.spatial.conv.weight",
    "SpatialGate.spatial.bn.weight", "SpatialGate.spatial.bn.bias",
    "SpatialGate.spatial.bn.running_mean", "SpatialGate.spatial.bn.running_var",
    "SpatialGate.spatial.bn.num_batches_tracked",
]


def build(params: dict, pool_types=("avg", "max"), training: bool = True) -> nn.CBAM:
    hidden, channels = params["ChannelGate.mlp.1.weight"].shape
    no_spatial = "SpatialGate.spatial.conv.weight" not in params
    cbam = nn.CBAM(channels, channels // hidden, pool_types, no_spatial)
    cbam.load_state_dict(params)
    return cbam.train(training)


def run(cbam: nn.CBAM, x: np.ndarray, dy: np.ndarray) -> dict:
    xt = mb.Tensor(x, requires_grad=True)
    y = cbam(xt)
    y.backward(dy)
    return {"y": y.data, "dx": xt.grad, "grads": {k: p.grad for k, p in cbam.named_parameters()},
            "running": {k: v for k, v in cbam.state_dict().items() if ".bn.running" in k
                        or "num_batches" in k}}


def assert_matches(ours: dict, ref: dict, rtol: float = 1e-10, atol: float = 1e-11) -> None:
    """BAM's tolerances (tests/test_bam.py)."""
    np.testing.assert_allclose(ours["y"], ref["y"], rtol=rtol, atol=atol, err_msg="y")
    np.testing.assert_allclose(ours["dx"], ref["dx"], rtol=rtol, atol=atol, err_msg="dx")
    assert ours["grads"].keys() == ref["grads"].keys()
    for name, grad in ref["grads"].items():
        np.testing.assert_allclose(ours["grads"][name], grad, rtol=rtol, atol=atol, err_msg=name)
    assert ours["running"].keys() == ref["running"].keys()
    for name, value in ref["running"].items():
        np.testing.assert_allclose(ours["running"][name], value, rtol=rtol, atol=atol, err_msg=name)


@st.composite
def cbam_cases(draw):
    hidden, r = draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 4]))
    h = draw(st.integers(1, 7))
    return {
        "n": draw(st.integers(2, 3)), "c": hidden * r, "r": r,
        "h": h, "w": draw(st.integers(1, 7).filter(lambda v: v != h)),  # never square
        "pool_types": tuple(draw(st.lists(st.sampled_from(POOLS), min_size=1, max_size=4))),
        "no_spatial": draw(st.booleans()),
        "training": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def case_arrays(case: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case["seed"])
    params = random_params(case["c"], case["r"], case["no_spatial"], rng=rng)
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    return params, x, rng.standard_normal(x.shape)


@settings(max_examples=30)
@given(cbam_cases())
def test_cbam_matches_torch(case):
    params, x, dy = case_arrays(case)
    ours = run(build(params, case["pool_types"], case["training"]), x, dy)
    assert_matches(ours, run_reference(params, x, dy, case["pool_types"], case["training"]))


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("training", [True, False])
def test_every_pool_type_alone_and_in_both_modes(pool, training):
    """Beside the drawn cases: each pool on its own, in each mode, on a tall map."""
    params, x, dy = case_arrays({"n": 2, "c": 8, "r": 4, "h": 9, "w": 4, "no_spatial": False,
                                 "seed": 5})
    ours = run(build(params, (pool,), training), x, dy)
    assert_matches(ours, run_reference(params, x, dy, (pool,), training))


@settings(max_examples=15)
@given(cbam_cases())
def test_manual_equals_autograd_and_torch(case):
    params, x, dy = case_arrays(case)
    before = {k: np.array(v) for k, v in params.items()}
    y, cache = manual.cbam_forward(x, params, case["pool_types"], case["no_spatial"],
                                   case["training"])
    grads = manual.cbam_backward(dy, cache)
    ref = run_reference(params, x, dy, case["pool_types"], case["training"])
    running = {k: v for k, v in cache["running"].items()}
    assert_matches({"y": y, "dx": grads.pop("x"), "grads": grads, "running": running}, ref)
    ours = run(build(params, case["pool_types"], case["training"]), x, dy)
    np.testing.assert_allclose(y, ours["y"], rtol=1e-10, atol=1e-12)
    for k, v in before.items():  # manual never writes into params
        np.testing.assert_array_equal(params[k], v, err_msg=k)


def _gradcheck_module(cbam: nn.CBAM, x: np.ndarray) -> bool:
    """Central differences for x and every parameter of the module, with the running
    buffers restored before each evaluation (training mode updates them)."""
    buffers = {k: np.array(v) for k, v in cbam.state_dict().items() if "running" in k or "num_" in k}
    slots = [(module, local) for _, module in cbam.named_modules() for local in module._parameters
             if module._parameters[local] is not None]

    def fn(x, *weights):
        cbam.load_state_dict(buffers, strict=False)
        for (module, local), w in zip(slots, weights):
            module._parameters[local] = w  # the module computes with the checked leaf itself
        return cbam(x)

    leaves = [mb.Tensor(m._parameters[k].data, requires_grad=True) for m, k in slots]
    return mb.gradcheck(fn, [mb.Tensor(x, requires_grad=True), *leaves], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pool_types", [("avg", "max"), ("lp", "lse")])
def test_full_finite_difference_in_training_mode(pool_types):
    rng = np.random.default_rng(7)
    cbam = build(random_params(4, 2, rng=rng), pool_types, training=True)
    assert _gradcheck_module(cbam, rng.standard_normal((2, 4, 4, 3)))


def test_gradcheck_catches_a_wrong_compress_backward(monkeypatch):
    """The check above can fail: send the channel max's gradient to every channel."""
    from minibam.ops import pool

    def wrong(ctx, grad):
        return (np.broadcast_to(grad[:, :1] + grad[:, 1:] / ctx.shape[1], ctx.shape).copy(),)

    monkeypatch.setattr(pool.ChannelPool, "backward", staticmethod(wrong))
    rng = np.random.default_rng(8)
    cbam = build(random_params(4, 2, rng=rng), training=False)
    with pytest.raises(mb.GradcheckError):
        _gradcheck_module(cbam, rng.standard_normal((2, 4, 4, 3)))


def test_released_checkpoint_names_load_unchanged():
    ref = TorchCBAM(64, 16).double().train()
    ref(torch.randn(4, 64, 6, 5, dtype=torch.float64))  # running stats moved, counter = 1
    ours = nn.CBAM(64)
    assert list(ours.state_dict()) == RELEASED_KEYS == list(ref.state_dict())
    result = ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy(), err_msg=k)
    # as a ResNet block's checkpoint holds it, under a prefix
    prefixed = {f"module.layer1.0.cbam.{k}": v.numpy() for k, v in ref.state_dict().items()}
    ours.load_state_dict({k.removeprefix("module.layer1.0.cbam."): v for k, v in prefixed.items()})
    no_spatial = nn.CBAM(64, no_spatial=True)
    assert list(no_spatial.state_dict()) == RELEASED_KEYS[:4]


def test_released_layer_settings():
    cbam = nn.CBAM(32, 8)
    conv, bn = cbam.SpatialGate.spatial.conv, cbam.SpatialGate.spatial.bn
    assert conv.bias is None and conv.kernel_size == (7, 7) and conv.padding == (3, 3)
    assert bn.momentum == 0.01 and bn.num_features == 1
    assert cbam.ChannelGate.mlp[1].weight.shape == (4, 32)
    assert cbam.pool_types == ("avg", "max") and not cbam.no_spatial
    assert nn.CBAM(24, 16).ChannelGate.mlp[1].out_features == 1  # floor, as the released code


def test_momentum_is_0_01():
    rng = np.random.default_rng(9)
    params = random_params(4, 2, rng=rng)
    cbam = build(params, training=True)
    x = mb.Tensor(rng.standard_normal((3, 4, 5, 6)))
    with mb.no_grad():
        x1 = cbam.ChannelGate(x)
        u = cbam.SpatialGate.spatial.conv(cbam.SpatialGate.compress(x1)).data
        cbam(x)
    expected = 0.99 * params["SpatialGate.spatial.bn.running_mean"] + 0.01 * u.mean()
    np.testing.assert_allclose(cbam.state_dict()["SpatialGate.spatial.bn.running_mean"], expected)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("no_spatial", [False, True])
def test_attention_maps(training, no_spatial):
    rng = np.random.default_rng(11)
    cbam = build(random_params(8, 2, no_spatial, rng=rng), ("avg", "max", "lse"), training)
    x = mb.Tensor(rng.standard_normal((3, 8, 5, 6)), requires_grad=True)
    before = cbam.state_dict()
    maps = cbam.attention_maps(x)
    assert {k: v.shape for k, v in maps.items()} == {
        "channel": (3, 8), "spatial": (3, 5, 6), "attention": (3, 8, 5, 6)}
    assert all(isinstance(v, np.ndarray) for v in maps.values())
    assert np.all((maps["channel"] > 0) & (maps["channel"] < 1))  # after the sigmoid
    np.testing.assert_allclose(maps["attention"],
                               maps["channel"][:, :, None, None] * maps["spatial"][:, None])
    if no_spatial:
        np.testing.assert_array_equal(maps["spatial"], 1.0)
    assert x.grad is None
    for k, v in cbam.state_dict().items():
        np.testing.assert_array_equal(before[k], v, err_msg=k)
    with mb.no_grad():
        y = cbam(x)
    np.testing.assert_allclose(y.data, x.data * maps["attention"], rtol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_float32_end_to_end(training):
    rng = np.random.default_rng(3)
    params = random_params(8, 2, rng=rng)
    cbam = build(params, POOLS, training).float()
    x = rng.standard_normal((2, 8, 6, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ours = run(cbam, x, dy)
    assert ours["y"].dtype == np.float32 and ours["dx"].dtype == np.float32
    assert all(g.dtype == np.float32 for g in ours["grads"].values())
    ref = run_reference(params, x.astype(np.float64), dy.astype(np.float64), POOLS, training)
    np.testing.assert_allclose(ours["y"], ref["y"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["dx"], ref["dx"], rtol=1e-3, atol=1e-3)


def test_empty_batch_in_eval():
    cbam = nn.CBAM(8, 2).eval()
    xt = mb.Tensor(np.zeros((0, 8, 4, 5)), requires_grad=True)
    y = cbam(xt)
    y.backward(np.zeros(y.shape))
    assert y.shape == (0, 8, 4, 5) and xt.grad.shape == (0, 8, 4, 5)


def test_input_is_not_mutated():
    x = np.random.default_rng(0).standard_normal((2, 8, 4, 4))
    copy = x.copy()
    nn.CBAM(8, 2, POOLS)(mb.Tensor(x, requires_grad=True)).backward(np.ones_like(x))
    np.testing.assert_array_equal(x, copy)


def test_a_single_sample_trains_when_it_has_several_pixels():
    """Unlike BAM (whose channel branch has a BatchNorm1d), CBAM's only batch norm sees
    N * H * W values per channel: one image is a valid training batch, one pixel is not."""
    cbam = nn.CBAM(8, 2)
    assert cbam(mb.Tensor(np.ones((1, 8, 3, 2)))).shape == (1, 8, 3, 2)
    with pytest.raises(ValueError, match=r"CBAM: .*one value per channel.*\(1, 8, 1, 1\)"):
        cbam(mb.Tensor(np.ones((1, 8, 1, 1))))
    assert nn.CBAM(8, 2, no_spatial=True)(mb.Tensor(np.ones((1, 8, 1, 1)))).shape == (1, 8, 1, 1)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: nn.CBAM(8, 16), ValueError, r"gate_channels=8 // reduction_ratio=16 is 0"),
        (lambda: nn.CBAM(8, 2, pool_types="avg"), TypeError, "pool_types must be a sequence"),
        (lambda: nn.CBAM(8, 2, pool_types=()), ValueError, "non-empty"),
        (lambda: nn.CBAM(8, 2, pool_types=("avg", "mean")), ValueError, r"'mean'"),
        # Fuzz finding: a list among the names was looked up in a dict ("unhashable type").
        (lambda: nn.CBAM(8, 2, pool_types=["avg", ["max"]]), ValueError, r"pool_types .*\['max'\]"),
        (lambda: nn.CBAM(8, 2, pool_types=[np.array(["avg"])]), ValueError, r"pool_types .*array"),
        (lambda: nn.CBAM(8.0, 2), TypeError, "gate_channels must be an int"),
        (lambda: nn.CBAM(8, 0), ValueError, "reduction_ratio must be a positive int"),
    ],
)
def test_construction_errors(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_input_errors_name_both_numbers():
    cbam = nn.CBAM(32)
    with pytest.raises(ValueError, match=r"CBAM: input must be 4-D.*\(2, 32, 4\)"):
        cbam(mb.Tensor(np.zeros((2, 32, 4))))
    with pytest.raises(ValueError, match=r"16 channels.*gate_channels=32"):
        cbam(mb.Tensor(np.zeros((2, 16, 4, 4))))
    with pytest.raises(TypeError, match="CBAM: input must be a minibam Tensor"):
        cbam(np.zeros((2, 32, 4, 4)))
    with pytest.raises(ValueError, match="16 channels"):
        cbam.attention_maps(mb.Tensor(np.zeros((2, 16, 4, 4))))


def test_manual_errors():
    params = random_params(4, 2, rng=0)
    x = np.zeros((2, 4, 3, 3))
    with pytest.raises(ValueError, match="pool_types"):
        manual.cbam_forward(x, params, ("avg", "median"))
    with pytest.raises(ValueError, match=r"cbam_forward: pool_types .*\['max'\]"):
        manual.cbam_forward(x, params, ["avg", ["max"]])
    with pytest.raises(TypeError, match=r"cbam_forward: pool_types must be a sequence.*got 5"):
        manual.cbam_forward(x, params, 5)
    with pytest.raises(ValueError, match=r"4-D.*\(4, 3, 3\)"):
        manual.cbam_forward(x[0], params)
    with pytest.raises(ValueError, match=r"unexpected keys \['SpatialGate"):
        manual.cbam_forward(x, params, no_spatial=True)
    with pytest.raises(ValueError, match=r"wrong shapes.*ChannelGate.mlp.3.weight"):
        manual.cbam_forward(np.zeros((2, 6, 3, 3)), params)
    with pytest.raises(ValueError, match="one value per channel"):
        manual.cbam_forward(np.zeros((1, 4, 1, 1)), params)
    _, cache = manual.cbam_forward(x, params)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 3\)"):
        manual.cbam_backward(np.zeros((2, 4, 3)), cache)


@pytest.mark.parametrize("attention", ["bam", "cbam", None])
def test_bamnet_holds_bam_cbam_or_nothing_and_trains(attention):
    mb.manual_seed(0)
    net = nn.BAMNet(in_channels=1, num_classes=3, widths=(8, 8, 16), reduction_ratio=2,
                    dilation_val=1, attention=attention)
    kinds = {"bam": nn.BAM, "cbam": nn.CBAM, None: type(None)}
    assert [type(m) for m in net.attention_modules()] == [kinds[attention]] * (2 if attention else 0)
    assert ({"bam0", "bam1"} if attention == "bam" else {"cbam0", "cbam1"} if attention else set()) \
        == {name for name, _ in net.named_children() if "bam" in name}
    rng = np.random.default_rng(0)
    x = mb.Tensor(rng.standard_normal((4, 1, 8, 8)))
    targets = np.array([0, 1, 2, 1])
    optimizer = mb.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = mb.functional.cross_entropy(net(x), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in net.parameters())


def test_bamnet_attention_errors_and_use_bam():
    with pytest.raises(ValueError, match="attention must be one of"):
        nn.BAMNet(attention="se")
    assert nn.BAMNet(widths=(4, 8), use_bam=False, attention="cbam").attention_modules() == []


def test_minibam_check_has_cbam_rows_and_they_can_fail(monkeypatch):
    """The rows pass in test_cli's full `minibam check` run; here a broken max-pool
    backward must fail both its own row and the whole module's."""
    from minibam.checks import all_cases, run_case
    from minibam.ops import pool

    cases = [c for c in all_cases() if c.op in ("CBAM", "global_max_pool2d", "channel_pool")]
    assert [c.op for c in cases] == ["global_max_pool2d", "channel_pool", "CBAM", "CBAM"]
    original = pool.GlobalMaxPool2d.backward
    monkeypatch.setattr(pool.GlobalMaxPool2d, "backward",
                        staticmethod(lambda ctx, g: (original(ctx, g)[0] * 0.5,)))
    assert [run_case(c, seed=3).passed for c in cases[:3]] == [False, True, False]


def test_manual_refuses_what_bam_manual_refuses():
    params = random_params(4, 2, rng=0)
    x = np.zeros((2, 4, 3, 3))
    with pytest.raises(TypeError, match="cbam_forward: x must hold real numbers"):
        manual.cbam_forward(x.astype(complex), params)
    with pytest.raises(TypeError, match="cbam_forward: params must be a dict"):
        manual.cbam_forward(x, list(params.items()))
    with pytest.raises(ValueError, match="cbam_forward: eps must be positive"):
        manual.cbam_forward(x, params, eps=0.0)
    with pytest.raises(TypeError, match="cbam_backward: cache must be the dict"):
        manual.cbam_backward(x, None)
    with np.errstate(all="raise"):  # inf in, inf out, no warning
        y, cache = manual.cbam_forward(np.full((2, 4, 3, 3), 1e308), params, training=False)
        manual.cbam_backward(np.ones_like(y), cache)


def test_bench_has_a_cbam_suite(capsys):
    from minibam.cli import main

    code = main(["bench", "--suite", "cbam", "--shapes", "2,16,5,7", "--dtype", "float64", "--repeat",
                 "1", "--warmup", "1", "--processes", "1", "--no-torch"])
    out = capsys.readouterr().out
    assert code == 0 and "CBAM forward + backward" in out and "(2,16,5,7)" in out
