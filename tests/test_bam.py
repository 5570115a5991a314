"""nn.BAM, nn.ChannelGate, nn.SpatialGate and BAMNet against the PyTorch reference in
tests/torch_bam.py, finite differences, and the API contract's errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minibam as mb
from minibam import manual, nn

torch = pytest.importorskip("torch")
from torch_bam import TorchBAM, random_params, run_reference  # noqa: E402

VARIANTS = ["paper", "official"]


def build(params: dict, variant: str, dilation_val: int = 4, training: bool = True) -> nn.BAM:
    hidden, channels = params["channel_att.gate_c.gate_c_fc_0.weight"].shape
    n = sum("gate_s_conv_di_" in k and k.endswith(".weight") for k in params)
    bam = nn.BAM(channels, channels // hidden, n, dilation_val, variant=variant)
    bam.load_state_dict(params)
    return bam.train(training)


def run(bam: nn.BAM, x: np.ndarray, dy: np.ndarray) -> dict:
    xt = mb.Tensor(x, requires_grad=True)
    y = bam(xt)
    y.backward(dy)
    return {
        "y": y.data,
        "dx": xt.grad,
        "grads": {k: p.grad for k, p in bam.named_parameters()},
        "running": bam.state_dict(),
    }


def assert_matches(ours: dict, ref: dict, rtol: float = 1e-10, atol: float = 1e-11) -> None:
    np.testing.assert_allclose(ours["y"], ref["y"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(ours["dx"], ref["dx"], rtol=rtol, atol=atol)
    assert ours["grads"].keys() == ref["grads"].keys()
    for name, grad in ref["grads"].items():
        np.testing.assert_allclose(ours["grads"][name], grad, rtol=rtol, atol=atol, err_msg=name)
    for name, value in ref["running"].items():
        np.testing.assert_allclose(ours["running"][name], value, rtol=rtol, atol=atol, err_msg=name)


@st.composite
def bam_cases(draw):
    hidden = draw(st.integers(1, 3))
    r = draw(st.sampled_from([1, 2, 4]))
    h = draw(st.integers(2, 7))
    w = draw(st.integers(2, 7).filter(lambda v: v != h))
    return {
        "n": draw(st.integers(2, 3)),
        "c": hidden * r,
        "r": r,
        "h": h,
        "w": w,
        "d": draw(st.integers(1, 4)),
        "k": draw(st.integers(0, 2)),
        "variant": draw(st.sampled_from(VARIANTS)),
        "training": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def case_arrays(case: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Random parameters (and batch-norm state), x and an upstream gradient for ``case``."""
    rng = np.random.default_rng(case["seed"])
    params = random_params(case["c"], case["r"], case["k"], case["variant"], rng=rng)
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    return params, x, rng.standard_normal(x.shape)


@settings(max_examples=20)
@given(bam_cases())
def test_bam_matches_torch(case):
    params, x, dy = case_arrays(case)
    bam = build(params, case["variant"], case["d"], case["training"])
    ours = run(bam, x, dy)
    ref = run_reference(params, x, dy, case["variant"], case["training"], case["d"])
    assert_matches(ours, ref)


@settings(max_examples=10)
@given(bam_cases())
def test_manual_equals_autograd_and_torch(case):
    params, x, dy = case_arrays(case)
    ours = run(build(params, case["variant"], case["d"], case["training"]), x, dy)
    y, cache = manual.bam_forward(x, params, variant=case["variant"], training=case["training"],
                                  dilation_val=case["d"])
    grads = manual.bam_backward(dy, cache)
    np.testing.assert_allclose(y, ours["y"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["x"], ours["dx"], rtol=1e-10, atol=1e-12)
    assert set(grads) == {"x", *ours["grads"]}
    for name, grad in ours["grads"].items():
        np.testing.assert_allclose(grads[name], grad, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_full_finite_difference_in_training_mode(variant):
    """Every element of x and of every parameter, against central differences, with the
    running buffers restored before each evaluation (training mode updates them)."""
    rng = np.random.default_rng(7)
    params = random_params(4, 2, 1, variant, rng=rng)
    bam = build(params, variant, dilation_val=2, training=True)
    buffers = [(m, k, np.array(v.data if isinstance(v, mb.Tensor) else v))
               for m in bam.modules() for k, v in m._buffers.items()]
    named = list(bam.named_parameters())
    owners = {name: bam for name, _ in named}
    for path, module in bam.named_modules():
        for local in module._parameters:
            owners[f"{path}.{local}" if path else local] = (module, local)
    x = mb.Tensor(rng.standard_normal((3, 4, 5, 4)), requires_grad=True)

    def fn(x, *weights):
        for module, key, value in buffers:  # running buffers back to where they were
            module._buffers[key] = mb.Tensor(value) if value.dtype.kind == "f" else value.copy()
        for (name, _), w in zip(named, weights):
            module, local = owners[name]
            module._parameters[local] = w  # the module computes with the checked leaf itself
        return bam(x)

    leaves = [mb.Tensor(p.data, requires_grad=True) for _, p in named]
    assert mb.gradcheck(fn, [x, *leaves], eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_catches_a_wrong_bam_backward(variant, monkeypatch):
    """The finite-difference check above can fail: break the fused op's backward."""
    from minibam.ops import attention

    original = attention.BamCombine.backward

    def wrong(ctx, grad):
        dx, dmc, dms = original(ctx, grad)
        return dx, dmc * 1.01, dms

    monkeypatch.setattr(attention.BamCombine, "backward", staticmethod(wrong))
    bam = build(random_params(4, 2, 1, variant, rng=1), variant, 2, training=False)
    x = mb.Tensor(np.random.default_rng(2).standard_normal((2, 4, 3, 5)), requires_grad=True)
    w = mb.Tensor(bam.channel_att.gate_c.gate_c_fc_final.bias.data, requires_grad=True)

    def fn(x, w):
        bam.channel_att.gate_c.gate_c_fc_final.bias.data = w.data
        return bam(x)

    with pytest.raises(mb.GradcheckError):
        mb.gradcheck(fn, [x, w], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("training", [True, False])
def test_float32_end_to_end(variant, training):
    rng = np.random.default_rng(3)
    params = random_params(8, 4, 2, variant, rng=rng)
    bam = build(params, variant, 2, training).float()
    x = rng.standard_normal((2, 8, 6, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ours = run(bam, x, dy)
    assert ours["y"].dtype == np.float32 and ours["dx"].dtype == np.float32
    assert all(g.dtype == np.float32 for g in ours["grads"].values())
    assert all(v.dtype == np.float32 for k, v in ours["running"].items() if "num_batches" not in k)
    ref = run_reference(params, x.astype(np.float64), dy.astype(np.float64), variant, training, 2)
    np.testing.assert_allclose(ours["y"], ref["y"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["dx"], ref["dx"], rtol=1e-3, atol=1e-3)


def test_variants_differ_and_have_the_papers_layers():
    paper = nn.BAM(16, 4, variant="paper")
    official = nn.BAM(16, 4, variant="official")
    extra = set(paper.state_dict()) - set(official.state_dict())
    assert {k.rsplit(".", 1)[0] for k in extra} == {
        "channel_att.gate_c.gate_c_bn_final", "spatial_att.gate_s.gate_s_bn_final"}
    assert set(official.state_dict()) < set(paper.state_dict())
    # default constructor arguments of the contract
    assert (paper.reduction_ratio, paper.dilation_conv_num, paper.dilation_val) == (4, 2, 4)
    assert nn.BAM(32).variant == "paper" and nn.BAM(32).reduction_ratio == 16


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_and_checkpoint_round_trip_with_torch(variant):
    ref = TorchBAM(32, 16, 2, 4, variant).double()
    ref.train()
    ref(torch.randn(4, 32, 6, 6, dtype=torch.float64))  # num_batches_tracked = 1, stats moved
    ours = nn.BAM(32, variant=variant)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy(), err_msg=k)
    assert ours.state_dict()["channel_att.gate_c.gate_c_bn_1.num_batches_tracked"] == 1
    back = TorchBAM(32, 16, 2, 4, variant).double()
    back.load_state_dict({k: torch.as_tensor(v) for k, v in ours.state_dict().items()})
    for k, v in back.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ref.state_dict()[k].numpy(), err_msg=k)


def test_refused_load_changes_nothing_and_lists_every_key():
    bam = nn.BAM(16, 4)
    before = bam.state_dict()
    bad = {k: v + 1.0 for k, v in before.items()}
    bad["channel_att.gate_c.gate_c_fc_0.weight"] = np.zeros((3, 3))
    del bad["spatial_att.gate_s.gate_s_conv_final.bias"]
    bad["spatial_att.gate_s.extra"] = np.zeros(2)
    with pytest.raises(RuntimeError) as info:
        bam.load_state_dict(bad)
    message = str(info.value)
    for key in ("channel_att.gate_c.gate_c_fc_0.weight", "spatial_att.gate_s.gate_s_conv_final.bias",
                "spatial_att.gate_s.extra"):
        assert key in message
    after = bam.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_official_checkpoint_with_resnet_prefix_loads_after_stripping():
    ref = TorchBAM(16, 4, 2, 4, "official").double()
    checkpoint = {f"module.bam1.{k}": v for k, v in ref.state_dict().items()}
    stripped = {k.removeprefix("module.bam1."): v.numpy() for k, v in checkpoint.items()}
    ours = nn.BAM(16, 4, variant="official")
    result = ours.load_state_dict(stripped)
    assert result.missing_keys == [] and result.unexpected_keys == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_non_square_input_uses_true_global_average(variant):
    rng = np.random.default_rng(5)
    params = random_params(8, 2, 1, variant, rng=rng)
    x = rng.standard_normal((2, 8, 3, 11))
    dy = rng.standard_normal(x.shape)
    bam = build(params, variant, 1, training=False)
    ours = run(bam, x, dy)
    assert_matches(ours, run_reference(params, x, dy, variant, False, 1))
    # Changing only columns beyond the first H must change the channel map (an H x H
    # window pool would not see them).
    x2 = x.copy()
    x2[:, :, :, 3:] += 1.0
    maps1 = bam.attention_maps(mb.Tensor(x))
    maps2 = bam.attention_maps(mb.Tensor(x2))
    assert not np.allclose(maps1["channel"], maps2["channel"])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("training", [True, False])
def test_attention_maps(variant, training):
    rng = np.random.default_rng(11)
    params = random_params(8, 2, 2, variant, rng=rng)
    bam = build(params, variant, 2, training)
    x = mb.Tensor(rng.standard_normal((3, 8, 5, 6)), requires_grad=True)
    before = bam.state_dict()
    maps = bam.attention_maps(x)
    assert set(maps) == {"channel", "spatial", "attention"}
    assert maps["channel"].shape == (3, 8)
    assert maps["spatial"].shape == (3, 5, 6)
    assert maps["attention"].shape == (3, 8, 5, 6)
    assert all(isinstance(v, np.ndarray) for v in maps.values())
    mc, ms = maps["channel"][:, :, None, None], maps["spatial"][:, None]
    combined = mc + ms if variant == "paper" else mc * ms
    np.testing.assert_allclose(maps["attention"], 1 / (1 + np.exp(-combined)), rtol=1e-12)
    # no side effects: no graph, no gradient, buffers untouched
    assert x.grad is None
    after = bam.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    # consistent with the forward pass: y = x * (1 + attention)
    with mb.no_grad():
        y = bam(x)
    np.testing.assert_allclose(y.data, x.data * (1 + maps["attention"]), rtol=1e-12)


def test_gates_return_maps_expanded_to_the_input():
    bam = nn.BAM(8, 2).eval()
    x = mb.Tensor(np.random.default_rng(0).standard_normal((2, 8, 4, 5)))
    assert bam.channel_att(x).shape == x.shape
    assert bam.spatial_att(x).shape == x.shape
    np.testing.assert_array_equal(bam.channel_att(x).data[:, :, 0, 0], bam.channel_att(x).data[:, :, 3, 4])


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        nn.BAM(30, 16)
    with pytest.raises(ValueError, match="variant"):
        nn.BAM(32, variant="sum")
    bam = nn.BAM(32)
    with pytest.raises(ValueError, match="4-D"):
        bam(mb.Tensor(np.zeros((2, 32, 4))))
    with pytest.raises(ValueError, match=r"16.*32|32.*16"):
        bam(mb.Tensor(np.zeros((2, 16, 4, 4))))
    with pytest.raises(ValueError, match="batch of one"):
        bam(mb.Tensor(np.zeros((1, 32, 4, 4))))
    with pytest.raises(ValueError, match="batch of one"):
        bam.attention_maps(mb.Tensor(np.zeros((1, 32, 4, 4))))
    with pytest.raises(TypeError):
        bam(np.zeros((2, 32, 4, 4)))
    counts = [m.num_batches_tracked for m in bam.modules() if hasattr(m, "num_batches_tracked")]
    assert all(int(c) == 0 for c in counts)  # refused inputs touched nothing
    bam.eval()
    assert bam(mb.Tensor(np.ones((1, 32, 4, 4)))).shape == (1, 32, 4, 4)  # fine in eval


def test_input_is_not_mutated():
    x = np.random.default_rng(0).standard_normal((2, 8, 4, 4))
    copy = x.copy()
    bam = nn.BAM(8, 2)
    y = bam(mb.Tensor(x, requires_grad=True))
    y.backward(np.ones_like(x))
    np.testing.assert_array_equal(x, copy)


@pytest.mark.parametrize("use_bam", [True, False])
def test_bamnet_trains_a_step(use_bam):
    mb.manual_seed(0)
    net = nn.BAMNet(in_channels=1, num_classes=3, widths=(4, 8), use_bam=use_bam,
                    reduction_ratio=2, dilation_val=1)
    assert len(net.bams()) == (1 if use_bam else 0)
    rng = np.random.default_rng(0)
    x = mb.Tensor(rng.standard_normal((4, 1, 8, 8)))
    targets = np.array([0, 1, 2, 1])
    optimizer = mb.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = mb.functional.cross_entropy(net(x), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_checkpoint_without_num_batches_tracked_loads_as_in_torch():
    """Checkpoints saved before PyTorch 0.4.1 have no num_batches_tracked; torch loads them."""
    ref = TorchBAM(16, 4, 2, 4, "paper").double()
    old = {k: v.numpy() for k, v in ref.state_dict().items() if "num_batches_tracked" not in k}
    ref.load_state_dict({k: torch.as_tensor(v) for k, v in old.items()})  # torch accepts it
    ours = nn.BAM(16, 4)
    result = ours.load_state_dict(old)
    assert result.missing_keys == []
    assert int(ours.state_dict()["channel_att.gate_c.gate_c_bn_1.num_batches_tracked"]) == 0
