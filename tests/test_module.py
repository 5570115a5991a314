"""The Module contract (minibam/nn/module.py): registration, names and order, modes,
gradients, dtypes, repr, and state_dict / load_state_dict, checked against the
equivalent PyTorch modules wherever PyTorch defines the answer.

The numerics of each layer (forward and gradients) are in test_layers.py.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import random_upstream

import minibam as mb
from minibam import nn

torch = pytest.importorskip("torch")
tnn = torch.nn


# ---------------------------------------------------------------- fixtures
class Net(nn.Module):
    """Own parameter and buffer, a nested Sequential with a BatchNorm, a shared child
    reachable under two names, and a plain (unregistered) attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(np.linspace(0.5, 1.5, 4))
        self.register_buffer("offset", mb.Tensor(np.arange(4.0)))
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
        self.head = nn.Linear(4, 2)
        self.alias = self.head  # shared: parameters once, state_dict under both names
        self.note = "not registered"

    def forward(self, x: mb.Tensor) -> mb.Tensor:
        return self.alias(self.body(x) * self.scale + self.offset)


class TorchNet(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = tnn.Parameter(torch.linspace(0.5, 1.5, 4, dtype=torch.float64))
        self.register_buffer("offset", torch.arange(4.0, dtype=torch.float64))
        self.body = tnn.Sequential(tnn.Linear(3, 4), tnn.BatchNorm1d(4), tnn.ReLU())
        self.head = tnn.Linear(4, 2)
        self.alias = self.head
        self.note = "not registered"

    def forward(self, x: Any) -> Any:
        return self.alias(self.body(x) * self.scale + self.offset)


def torch_state(state: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def numpy_state(module: Any) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((k, v.detach().numpy().copy()) for k, v in module.state_dict().items())


def assert_states_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert np.asarray(a[key]).dtype == np.asarray(b[key]).dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def perturbed(state: dict[str, np.ndarray], seed: int = 0) -> OrderedDict[str, np.ndarray]:
    """Same keys, shapes and dtypes, different values."""
    rng = np.random.default_rng(seed)
    out = OrderedDict()
    for key, value in state.items():
        if value.dtype.kind == "f":
            out[key] = rng.standard_normal(value.shape).astype(value.dtype)
        else:
            out[key] = value + 7
    return out


def nested() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5, bias=False), nn.BatchNorm1d(5)),
        nn.Sigmoid(),
    )


def torch_nested() -> Any:
    return tnn.Sequential(
        tnn.Conv2d(2, 3, 3, padding=1),
        tnn.BatchNorm2d(3),
        tnn.ReLU(),
        tnn.Sequential(tnn.Flatten(), tnn.Linear(3 * 4 * 4, 5, bias=False), tnn.BatchNorm1d(5)),
        tnn.Sigmoid(),
    ).double()


# ------------------------------------------------------------ registration
def test_parameter_is_a_trainable_copy() -> None:
    source = np.arange(3.0)
    p = nn.Parameter(source)
    assert isinstance(p, mb.Tensor) and p.requires_grad
    assert p.dtype == np.float64 and p.data is not source
    source[0] = 99.0
    assert p.data[0] == 0.0
    assert not nn.Parameter(source, requires_grad=False).requires_grad
    assert nn.Parameter([1, 2]).dtype == np.float64  # ints become float64, as Tensor
    assert "Parameter containing" in repr(p)


def test_names_and_order_match_torch() -> None:
    net, ref = Net(), TorchNet()
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in ref.named_parameters()] == [
        "scale", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias",
        "head.weight", "head.bias",
    ]
    assert [n for n, _ in net.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert [n for n, _ in net.named_modules()] == [n for n, _ in ref.named_modules()] == [
        "", "body", "body.0", "body.1", "body.2", "head",
    ]
    assert [n for n, _ in net.named_children()] == [n for n, _ in ref.named_children()]
    # state_dict does not de-duplicate: the shared head appears under both names.
    assert list(net.state_dict()) == list(ref.state_dict())
    assert "alias.weight" in net.state_dict()


def test_members_are_the_registered_objects() -> None:
    net = Net()
    params = list(net.parameters())
    assert params[0] is net.scale and params[1] is net.body[0].weight
    assert [p for _, p in net.named_parameters()] == params
    assert all(isinstance(p, nn.Parameter) for p in params)
    assert len(params) == len({id(p) for p in params}) == 7
    assert list(net.buffers())[0] is net.offset
    assert list(net.children()) == [net.body, net.head]
    assert list(net.modules())[0] is net
    assert list(net.parameters(recurse=False)) == [net.scale]
    assert [n for n, _ in net.named_parameters(prefix="net")][:2] == ["net.scale", "net.body.0.weight"]
    assert "note" not in net.state_dict() and net.note == "not registered"


def test_named_modules_is_depth_first_preorder() -> None:
    inner = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Sigmoid()))
    outer = nn.Sequential(inner, nn.Flatten(), inner)  # inner twice: listed once
    ref_inner = tnn.Sequential(tnn.ReLU(), tnn.Sequential(tnn.Sigmoid()))
    ref = tnn.Sequential(ref_inner, tnn.Flatten(), ref_inner)
    names = [n for n, _ in outer.named_modules()]
    assert names == [n for n, _ in ref.named_modules()] == ["", "0", "0.0", "0.1", "0.1.0", "1"]
    # children() lists each direct child once, as named_modules does
    assert [n for n, _ in outer.named_children()] == [n for n, _ in ref.named_children()] == ["0", "1"]
    assert list(outer.children()) == [inner, outer[1]]


def test_attribute_assignment_keeps_registries_consistent() -> None:
    layer = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="weight"):
        layer.weight = mb.Tensor(np.zeros((3, 2)))  # a plain Tensor cannot be a parameter
    with pytest.raises(TypeError, match="weight"):
        layer.weight = np.zeros((3, 2))
    assert "weight" in layer.state_dict()
    new = nn.Parameter(np.ones((3, 2)))
    layer.weight = new
    assert layer.weight is new and list(layer.parameters())[0] is new
    assert list(layer.state_dict()) == ["weight", "bias"]  # kept its place
    layer.bias = None  # stays registered as "no bias", as in PyTorch
    assert layer.bias is None and list(layer.state_dict()) == ["weight"]
    layer.bias = nn.Parameter(np.zeros(3))
    assert list(layer.state_dict()) == ["weight", "bias"]
    seq = nn.Sequential(nn.ReLU())
    with pytest.raises(TypeError, match="child module"):
        seq.__setattr__("0", "relu")
    del layer.bias
    assert list(layer.state_dict()) == ["weight"]
    with pytest.raises(AttributeError, match="bias"):
        _ = layer.bias


def test_registration_errors() -> None:
    m = nn.Module()
    with pytest.raises(TypeError, match="Parameter"):
        m.register_parameter("w", mb.Tensor([1.0]))
    with pytest.raises(TypeError, match="Module"):
        m.add_module("child", lambda x: x)
    for bad in ("", "a.b"):
        with pytest.raises(ValueError):
            m.add_module(bad, nn.ReLU())
        with pytest.raises(ValueError):
            m.register_buffer(bad, mb.Tensor([1.0]))
    with pytest.raises(TypeError):
        m.add_module(3, nn.ReLU())
    m.plain = 1
    with pytest.raises(KeyError, match="plain"):
        m.register_buffer("plain", mb.Tensor([1.0]))
    with pytest.raises(KeyError, match="training"):
        m.add_module("training", nn.ReLU())
    with pytest.raises(AttributeError, match="nothing"):
        _ = m.nothing
    with pytest.raises(NotImplementedError):
        m(mb.Tensor([1.0]))

    class Early(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter([1.0])  # before super().__init__()

    with pytest.raises(AttributeError, match="__init__"):
        Early()


def test_call_forwards_arguments() -> None:
    class Affine(nn.Module):
        def forward(self, x: mb.Tensor, scale: float = 1.0, *, shift: float = 0.0) -> mb.Tensor:
            return x * scale + shift

    y = Affine()(mb.Tensor([1.0, 2.0]), 3.0, shift=1.0)
    np.testing.assert_array_equal(y.data, [4.0, 7.0])


# ---------------------------------------------------------------- Sequential
def test_add_module_keeps_names() -> None:
    gate = nn.Sequential()
    gate.add_module("flatten", nn.Flatten())
    gate.add_module("gate_c_fc_0", nn.Linear(4, 2))
    gate.add_module("gate_c_bn_1", nn.BatchNorm1d(2))
    ref = tnn.Sequential()
    ref.add_module("flatten", tnn.Flatten())
    ref.add_module("gate_c_fc_0", tnn.Linear(4, 2))
    ref.add_module("gate_c_bn_1", tnn.BatchNorm1d(2))
    assert list(gate.state_dict()) == list(ref.state_dict())
    assert gate.gate_c_fc_0 is gate[1] is gate["gate_c_fc_0"]
    named = nn.Sequential(OrderedDict([("a", nn.ReLU()), ("b", nn.Sigmoid())]))
    assert [n for n, _ in named.named_children()] == ["a", "b"]


def test_sequential_indexing_len_iteration() -> None:
    layers = [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Sigmoid()]
    seq = nn.Sequential(*layers)
    assert len(seq) == 4 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[-1] and seq[-4] is layers[0]
    tail = seq[1:3]
    assert isinstance(tail, nn.Sequential) and list(tail) == layers[1:3]
    assert [n for n, _ in tail.named_children()] == ["1", "2"]  # names kept, as PyTorch
    for bad in (4, -5):
        with pytest.raises(IndexError):
            seq[bad]
    x = mb.Tensor(np.random.default_rng(0).standard_normal((5, 3)))
    expected = layers[3](layers[2](layers[1](layers[0](x))))
    np.testing.assert_array_equal(seq(x).data, expected.data)
    assert len(nn.Sequential()) == 0
    x_same = nn.Sequential()(x)
    assert x_same is x  # the empty Sequential is the identity
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), "not a module")


# ----------------------------------------------------------------------- repr
def _items(line: str) -> set[str]:
    return {part.strip(" )") for part in line.replace("(", ", ", 1).split(", ")}


def test_repr_matches_torch() -> None:
    leaves = [
        (nn.Linear(3, 4), tnn.Linear(3, 4)),
        (nn.Linear(3, 4, bias=False), tnn.Linear(3, 4, bias=False)),
        (nn.Conv2d(2, 3, 3), tnn.Conv2d(2, 3, 3)),
        (nn.Conv2d(2, 3, (1, 3), stride=2, padding=(0, 1), dilation=2, bias=False),
         tnn.Conv2d(2, 3, (1, 3), stride=2, padding=(0, 1), dilation=2, bias=False)),
        (nn.ReLU(), tnn.ReLU()),
        (nn.Sigmoid(), tnn.Sigmoid()),
        (nn.Flatten(), tnn.Flatten()),
        (nn.Sequential(), tnn.Sequential()),
    ]
    for ours, theirs in leaves:
        assert repr(ours) == repr(theirs)
    ours, theirs = repr(nested()).splitlines(), repr(torch_nested()).splitlines()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        # Same indentation, child name and class on every line; our settings are a subset
        # of PyTorch's (which adds e.g. bias=True to BatchNorm in recent versions).
        assert a[: a.find("(", a.find(")") + 1) + 1] == b[: b.find("(", b.find(")") + 1) + 1]
        assert _items(a) <= _items(b), (a, b)
    assert "BatchNorm2d(3, eps=1e-05, momentum=0.1" in repr(nested())


# ------------------------------------------------------------------- modes
def test_train_eval_recursive() -> None:
    net = nested()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    assert net.train(False) is net and not net[3][2].training
    net[3].train()
    assert net[3][2].training and not net.training  # only that subtree
    with pytest.raises(ValueError):
        net.train("eval")


def test_zero_grad() -> None:
    net = nested()
    x = mb.Tensor(np.random.default_rng(1).standard_normal((3, 2, 4, 4)))
    y = net(x)
    y.backward(random_upstream(y.shape, 0))
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    for p in net.parameters():
        assert p.grad.shape == p.shape and p.grad.dtype == p.dtype and not p.grad.any()
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_gradients_accumulate_until_zero_grad() -> None:
    layer = nn.Linear(3, 2)
    x = mb.Tensor(np.ones((4, 3)))
    up = random_upstream((4, 2), 3)
    layer(x).backward(up)
    first = layer.weight.grad.copy()
    layer(x).backward(up)
    np.testing.assert_allclose(layer.weight.grad, 2 * first, rtol=1e-14)
    layer.zero_grad()
    layer(x).backward(up)
    np.testing.assert_allclose(layer.weight.grad, first, rtol=1e-14)


# ----------------------------------------------------------------- dtypes
def test_parameters_are_float64_by_default() -> None:
    net = nested()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert {b.dtype for b in net.buffers()} == {np.dtype(np.float64), np.dtype(np.int64)}


@pytest.mark.parametrize("convert", ["to", "float", "double"])
def test_dtype_conversion_in_place(convert: str) -> None:
    net = nested()
    x = mb.Tensor(np.random.default_rng(2).standard_normal((3, 2, 4, 4)))
    y = net(x)
    y.backward(random_upstream(y.shape, 1))
    params = list(net.parameters())
    before = net.state_dict()
    target = np.float64 if convert == "double" else np.float32
    if convert == "to":
        assert net.to(np.float32) is net
        assert net.to("float32") is net
    elif convert == "float":
        assert net.float() is net
    else:
        net.float()
        assert net.double() is net
    assert list(net.parameters()) == params  # the same objects: optimizers keep working
    for p in params:
        assert p.dtype == target and p.grad.dtype == target
    for name, value in net.state_dict().items():
        expected = np.int64 if name.endswith("num_batches_tracked") else target
        assert value.dtype == expected, name
        np.testing.assert_allclose(value, before[name], rtol=1e-6)
    with pytest.raises(TypeError):
        net.to(np.int32)
    with pytest.raises(TypeError):
        net.to(np.float16)


def test_float_buffer_arrays_are_converted_counters_are_not() -> None:
    m = nn.Module()
    m.register_buffer("table", np.linspace(0, 1, 3))
    m.register_buffer("count", np.array(3, dtype=np.int64))
    m.float()
    assert m.table.dtype == np.float32 and m.count.dtype == np.int64


def test_float32_module_float32_input() -> None:
    net = nested().float().eval()
    x = mb.Tensor(np.random.default_rng(3).standard_normal((2, 2, 4, 4)).astype(np.float32),
                  requires_grad=True)
    for mode in ("eval", "train"):
        getattr(net, mode)()
        net.zero_grad()
        x.grad = None
        y = net(x)
        assert y.dtype == np.float32, mode
        y.backward(random_upstream(y.shape, 2, np.float32))
        assert x.grad.dtype == np.float32
        assert all(p.grad.dtype == np.float32 for p in net.parameters())
    assert all(b.dtype in (np.float32, np.int64) for b in net.buffers())


@pytest.mark.parametrize("module_dtype, input_dtype", [(np.float64, np.float32), (np.float32, np.float64)])
def test_mixed_dtypes_promote_like_numpy(module_dtype: Any, input_dtype: Any) -> None:
    net = nested().to(module_dtype)
    x = mb.Tensor(np.random.default_rng(4).standard_normal((2, 2, 4, 4)).astype(input_dtype),
                  requires_grad=True)
    y = net(x)
    assert y.dtype == np.result_type(module_dtype, input_dtype) == np.float64
    y.backward(random_upstream(y.shape, 3))
    assert x.grad.dtype == input_dtype  # each gradient has its own tensor's dtype
    assert all(p.grad.dtype == module_dtype for p in net.parameters())
    assert all(b.dtype in (module_dtype, np.int64) for b in net.buffers())  # buffers keep theirs


# ---------------------------------------------------------------- state_dict
@pytest.mark.parametrize(
    "make, make_torch",
    [
        (lambda: nn.Linear(3, 2), lambda: tnn.Linear(3, 2)),
        (lambda: nn.Linear(3, 2, bias=False), lambda: tnn.Linear(3, 2, bias=False)),
        (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1), lambda: tnn.Conv2d(2, 4, 3, stride=2, padding=1)),
        (lambda: nn.BatchNorm1d(5), lambda: tnn.BatchNorm1d(5)),
        (lambda: nn.BatchNorm2d(3, momentum=None), lambda: tnn.BatchNorm2d(3, momentum=None)),
        (nested, torch_nested),
        (Net, TorchNet),
    ],
)
def test_state_dict_matches_torch_and_round_trips(make: Any, make_torch: Any) -> None:
    ours, theirs = make(), make_torch().double()
    state = ours.state_dict()
    ref = numpy_state(theirs)
    assert isinstance(state, OrderedDict)
    assert list(state) == list(ref)
    for key in state:
        assert isinstance(state[key], np.ndarray)
        assert state[key].shape == ref[key].shape and state[key].dtype == ref[key].dtype, key
    # minibam -> torch -> a fresh minibam module: unchanged, bit for bit.
    assert ours.load_state_dict(perturbed(state, seed=5)) == ([], [])
    state = ours.state_dict()  # (a shared module's two entries now hold the same values)
    theirs.load_state_dict(torch_state(ours.state_dict()), strict=True)
    assert_states_equal(numpy_state(theirs), state)
    fresh = make()
    fresh.load_state_dict(numpy_state(theirs))
    assert_states_equal(fresh.state_dict(), state)
    # torch tensors are accepted as they are (np.asarray takes them).
    fresh.load_state_dict(theirs.state_dict())
    assert_states_equal(fresh.state_dict(), state)


def test_batchnorm_state_includes_num_batches_tracked() -> None:
    bn = nn.BatchNorm2d(3)
    state = bn.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert state["num_batches_tracked"].shape == () and state["num_batches_tracked"].dtype == np.int64
    bn(mb.Tensor(np.random.default_rng(0).standard_normal((2, 3, 2, 2))))
    bn(mb.Tensor(np.random.default_rng(1).standard_normal((2, 3, 2, 2))))
    assert bn.state_dict()["num_batches_tracked"] == 2
    assert isinstance(bn.num_batches_tracked, np.ndarray)


def test_state_dict_returns_copies() -> None:
    net = nested()
    net(mb.Tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4))))
    state = net.state_dict()
    kept = copy.deepcopy(state)
    for value in state.values():
        value[...] = 123  # scribbling on the copy ...
    assert_states_equal(net.state_dict(), kept)  # ... leaves the module alone
    assert net.state_dict()["0.weight"] is not net.state_dict()["0.weight"]
    assert not np.shares_memory(net.state_dict()["0.weight"], net[0].weight.data)


# ----------------------------------------------------------- load_state_dict
def test_load_takes_arrays_and_lists_and_casts() -> None:
    net = nested().float()
    params = list(net.parameters())
    source = perturbed(nested().state_dict(), seed=1)  # float64 arrays into float32 params
    as_lists = {k: v.tolist() for k, v in source.items()}
    result = net.load_state_dict(as_lists)
    assert isinstance(result, nn.IncompatibleKeys)
    assert result.missing_keys == [] and result.unexpected_keys == []
    loaded = net.state_dict()
    for key, value in source.items():
        expected = np.int64 if key.endswith("num_batches_tracked") else np.float32
        assert loaded[key].dtype == expected, key
        np.testing.assert_array_equal(loaded[key], value.astype(expected))
    assert list(net.parameters()) == params  # filled in place: the same Parameter objects
    # Integer and float values for the counter; ints for a float parameter.
    bn = nn.BatchNorm1d(2)
    bn.load_state_dict({"weight": [1, 2], "bias": np.array([0, 1], dtype=np.int32),
                        "running_mean": [0.0, 0.5], "running_var": [1.0, 2.0],
                        "num_batches_tracked": 4.0})
    assert bn.weight.dtype == np.float64 and bn.weight.data.tolist() == [1.0, 2.0]
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked == 4


def test_load_does_not_alias_the_callers_arrays() -> None:
    layer = nn.Linear(2, 2)
    state = perturbed(layer.state_dict())
    layer.load_state_dict(state)
    expected = state["weight"].copy()
    state["weight"][...] = 0.0
    np.testing.assert_array_equal(layer.weight.data, expected)
    layer.weight.data += 1.0  # e.g. an optimizer step
    np.testing.assert_array_equal(state["weight"], 0.0)


def test_strict_error_lists_every_key_and_changes_nothing() -> None:
    net = nested()
    net(mb.Tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4))))
    before = net.state_dict()
    params = [p.data for p in net.parameters()]
    bad = perturbed(before, seed=9)  # valid entries with new values: must not be written
    del bad["0.bias"], bad["3.2.running_var"]
    bad["extra.weight"] = np.zeros(2)
    bad["1.unknown"] = np.zeros(3)
    bad["0.weight"] = np.zeros((3, 2, 3, 2))
    bad["3.1.weight"] = np.zeros((48, 5))  # transposed
    bad["1.num_batches_tracked"] = np.zeros(1, dtype=np.int64)  # (1,) is not ()
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(bad)
    message = str(info.value)
    for key in ("0.bias", "3.2.running_var", "extra.weight", "1.unknown", "0.weight",
                "3.1.weight", "1.num_batches_tracked"):
        assert key in message, key
    assert "(3, 2, 3, 2)" in message and "(3, 2, 3, 3)" in message
    assert isinstance(info.value, RuntimeError)  # PyTorch raises RuntimeError
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert_states_equal(net.state_dict(), before)
    assert all(p.data is d for p, d in zip(net.parameters(), params, strict=True))


def test_shape_mismatch_is_refused_even_when_not_strict() -> None:
    layer = nn.Linear(3, 2)
    before = layer.state_dict()
    state = perturbed(before)
    state["bias"] = np.zeros(3)
    with pytest.raises(nn.StateDictError, match="bias"):
        layer.load_state_dict(state, strict=False)
    assert_states_equal(layer.state_dict(), before)


def test_unreadable_values_are_refused() -> None:
    layer = nn.Linear(2, 1)
    before = layer.state_dict()
    for value in ("abc", None, [[1.0, 2.0], [3.0]], np.array([[1j, 2j]])):
        with pytest.raises(nn.StateDictError, match="weight"):
            layer.load_state_dict({"weight": value, "bias": np.zeros(1)})
    bn = nn.BatchNorm1d(1)
    state = bn.state_dict()
    state["num_batches_tracked"] = np.array("x")
    with pytest.raises(nn.StateDictError, match="num_batches_tracked"):
        bn.load_state_dict(state)
    assert_states_equal(layer.state_dict(), before)
    with pytest.raises(TypeError, match="mapping"):
        layer.load_state_dict([np.zeros((1, 2)), np.zeros(1)])


def test_non_strict_returns_missing_and_unexpected() -> None:
    net, ref = nested(), torch_nested()
    state = perturbed(net.state_dict(), seed=3)
    del state["1.running_mean"], state["3.1.weight"]
    state["head.weight"] = np.zeros(2)
    state["head.bias"] = np.zeros(2)
    before = net.state_dict()
    result = net.load_state_dict(state, strict=False)
    expected = ref.load_state_dict(torch_state(state), strict=False)
    assert result.missing_keys == list(expected.missing_keys) == ["1.running_mean", "3.1.weight"]
    assert result.unexpected_keys == list(expected.unexpected_keys) == ["head.weight", "head.bias"]
    after = net.state_dict()
    for key in after:
        source = before if key in ("1.running_mean", "3.1.weight") else state
        np.testing.assert_array_equal(after[key], source[key], err_msg=key)


def test_loaded_module_computes_like_torch() -> None:
    """A torch module (after a few training steps) loaded into minibam gives the same
    outputs in eval mode: the state carries everything that matters."""
    ref = torch_nested()
    rng = np.random.default_rng(7)
    for _ in range(3):
        ref(torch.from_numpy(rng.standard_normal((4, 2, 4, 4))))
    ref.eval()
    net = nested().eval()
    net.load_state_dict(numpy_state(ref))
    x = rng.standard_normal((3, 2, 4, 4))
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(mb.Tensor(x)).data, expected, rtol=1e-10, atol=1e-13)


def test_deepcopy_is_independent() -> None:
    net = nested()
    twin = copy.deepcopy(net)
    assert_states_equal(twin.state_dict(), net.state_dict())
    twin[0].weight.data += 1.0
    assert not np.array_equal(twin[0].weight.data, net[0].weight.data)


# ------------------------------------------- random structures vs PyTorch
LEAVES = {
    "linear": (lambda: nn.Linear(2, 3), lambda: tnn.Linear(2, 3)),
    "linear_nobias": (lambda: nn.Linear(2, 3, bias=False), lambda: tnn.Linear(2, 3, bias=False)),
    "conv": (lambda: nn.Conv2d(1, 2, (1, 2)), lambda: tnn.Conv2d(1, 2, (1, 2))),
    "bn1": (lambda: nn.BatchNorm1d(2), lambda: tnn.BatchNorm1d(2)),
    "bn2": (lambda: nn.BatchNorm2d(2), lambda: tnn.BatchNorm2d(2)),
    "relu": (nn.ReLU, tnn.ReLU),
}
NAMES = st.sampled_from(["a", "b", "gate_s_bn_di_0", "fc", "0", "7"])
trees = st.recursive(
    st.sampled_from(sorted(LEAVES)),
    lambda children: st.lists(st.tuples(NAMES, children), max_size=4, unique_by=lambda t: t[0]),
    max_leaves=10,
)


def build(tree: Any, side: int) -> Any:
    if isinstance(tree, str):
        return LEAVES[tree][side]()
    seq = (nn.Sequential if side == 0 else tnn.Sequential)()
    for name, child in tree:
        seq.add_module(name, build(child, side))
    return seq


@settings(max_examples=20)
@given(tree=trees)
def test_random_structures_name_like_torch(tree: Any) -> None:
    ours, theirs = build(tree, 0), build(tree, 1)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    ref = numpy_state(theirs.double())
    assert list(ours.state_dict()) == list(ref)
    ours.load_state_dict(ref)
    assert_states_equal(ours.state_dict(), ref)
    assert repr(ours).count("\n") == repr(theirs).count("\n")
