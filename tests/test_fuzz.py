"""Fuzz of the whole public surface: every call works or fails the documented way.

For each public function, method and constructor (``ENTRIES``), hypothesis builds a
valid call and then, in most examples, replaces one or two arguments with something
hostile: wrong types, wrong ranks and shapes, zero-size and huge sizes, NaN/inf,
float16, int, bool, complex, object and string arrays, read-only, non-contiguous and
Fortran-order arrays, huge and negative integers, 0-d float arrays. Each call must then

- either work, and then match PyTorch where it has the same function (finite inputs);
- or raise the documented type (``TypeError``/``ValueError``; ``RuntimeError`` or
  ``IndexError`` where the API says so) with a message that names the function and the
  argument that was replaced, never a bare NumPy or Python message;

and must never change an array the caller passed (batch norm's running buffers aside),
nor warn (a ``RuntimeWarning`` fails: inf and nan come back silently).
The same for every CLI command: exit 0/1, or one line on stderr and exit 2.

Profiles (tests/conftest.py): CI runs ``EXAMPLES`` (45) per entry point, about 12 s of
CPU; ``HYPOTHESIS_PROFILE=thorough`` runs 1,200. ``MINIBAM_FUZZ_REPORT=file.json``
writes the count of inputs and outcomes per entry point (docs/guarantees.md quotes one).
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minibam as mb
from minibam import functional as F
from minibam import manual, nn, optim
from minibam.manual import _validate as manual_checks
from minibam.ops import _checks

EXAMPLES = settings().max_examples * 3  # 45 in the CI profile, 1200 in "thorough"
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

# What NumPy and Python say when a check was missing: none of it may reach a user.
INTERNAL = re.compile(
    r"could not broadcast|operands could not|cannot reshape array|unsupported operand|"
    r"object of type|not subscriptable|has no attribute|positional argument|ufunc|"
    r"Unable to allocate|invalid literal|must be real number, not|'NoneType'|"
    r"is not iterable|out of bounds for axis|truth value of an array|cannot convert float|"
    r"cannot be interpreted as an integer|zero-size array|maximum recursion|"
    r"Cannot cast|setting an array element|only integer scalar arrays|unhashable|"
    r"not supported between instances|array is too big|can't multiply sequence"
)


# ---------------------------------------------------------------------- hostile values


def _layouts(a: np.ndarray) -> list[np.ndarray]:
    """The same values as a Fortran-order, a non-contiguous and a read-only array."""
    fortran = np.asfortranarray(a)
    spread = np.zeros(a.shape + (2,), dtype=a.dtype)
    spread[..., 0] = a
    strided = spread[..., 0]  # same values, every other element in memory
    frozen = a.copy()
    frozen.flags.writeable = False
    return [fortran, strided, frozen]


@st.composite
def weird_arrays(draw: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
    kind = draw(st.sampled_from(["float16", "int", "bool", "complex", "object", "str",
                                 "nan", "inf", "float32", "uint8"]))
    base = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) - 2
    if kind == "nan":
        return np.full(shape, np.nan)
    if kind == "inf":
        return np.where(base > 0, np.inf, -np.inf)
    if kind == "object":
        return base.astype(object)
    if kind == "str":
        return base.astype(str)
    if kind == "complex":
        return base + 1j
    return base.astype({"int": np.int64, "uint8": np.uint8}.get(kind, kind))


@st.composite
def weird_tensors(draw: Any) -> mb.Tensor:
    """Tensors of wrong ranks, empty or odd shapes, float32, NaN/inf, odd layouts."""
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=5)))
    data = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape)
    if data.size and draw(st.booleans()):
        data.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
    with np.errstate(over="ignore"):  # 1e300 becomes inf in float32, as intended
        data = data.astype(draw(st.sampled_from([np.float64, np.float32])))
    t = mb.Tensor(data, requires_grad=draw(st.booleans()))
    if draw(st.booleans()):
        t.data = draw(st.sampled_from(_layouts(t.data)))
    return t


HOSTILE = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([-1, 0, 10**12, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.array(1.7), np.array(2.0), np.float64(2.0), np.int64(-3), np.bool_(True),
                     1 + 2j, object(), [1, 2], (1,), (), {}, (2, 2, 2), [[1.0]], b"x"]),
    weird_arrays(),
    weird_tensors(),
)


# ---------------------------------------------------------------------------- entries


@dataclass
class Entry:
    """One public callable: ``name`` (what its errors must mention), a builder of a valid
    call's arguments, the call itself, and PyTorch's equivalent when there is one."""

    name: str
    valid: Callable[[Any], dict[str, Any]]
    call: Callable[..., Any]
    torch: Callable[..., Any] | None = None
    errors: tuple[type[BaseException], ...] = (TypeError, ValueError)
    mutable: tuple[str, ...] = ()  # arguments the call may change by design
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    owner_names: tuple[str, ...] = ()  # other names its errors may carry (a part that refused)
    label: str = ""  # how the report counts it, when not ``name``


def _rng(draw: Any) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**16)))


def _tensor(rng: np.random.Generator, shape: tuple[int, ...], grad: bool = True) -> mb.Tensor:
    return mb.Tensor(rng.standard_normal(shape), requires_grad=grad)


def _one(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    return {"x": _tensor(rng, tuple(draw(st.lists(st.integers(1, 4), max_size=3))))}


def _two(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    return {"a": _tensor(rng, shape), "b": _tensor(rng, shape[draw(st.integers(0, len(shape))):])}


def _nchw(draw: Any, c: int | None = None, n_min: int = 1) -> tuple[int, int, int, int]:
    return (draw(st.integers(n_min, 3)), c or draw(st.integers(1, 3)), draw(st.integers(1, 5)),
            draw(st.integers(1, 5)))


def _conv(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    n, c, h, w = _nchw(draw)
    k = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    h, w = h + k, w + k
    return {"x": _tensor(rng, (n, c, h, w)), "weight": _tensor(rng, (2, c, k, k)),
            "bias": _tensor(rng, (2,)), "stride": draw(st.integers(1, 2)), "padding": pad,
            "dilation": 1}


def _bn(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    n, c, h, w = _nchw(draw, n_min=2)
    shape = (n, c, h, w) if draw(st.booleans()) else (n, c)
    return {"x": _tensor(rng, shape), "running_mean": rng.standard_normal(c),
            "running_var": rng.uniform(0.5, 2, c), "weight": _tensor(rng, (c,)),
            "bias": _tensor(rng, (c,)), "training": draw(st.booleans()), "momentum": 0.1,
            "eps": 1e-5}


def _axis(draw: Any) -> dict[str, Any]:
    args = _one(draw)
    nd = args["x"].ndim
    args["axis"] = draw(st.one_of(st.none(), st.integers(-nd, nd - 1) if nd else st.none()))
    args["keepdims"] = draw(st.booleans())
    return args


def _reshape(draw: Any) -> dict[str, Any]:
    args = _one(draw)
    return {"x": args["x"], "shape": (-1,) if draw(st.booleans()) else (args["x"].data.size,)}


def _permute(draw: Any) -> dict[str, Any]:
    args = _one(draw)
    return {"x": args["x"], "axes": tuple(np.random.default_rng(0).permutation(args["x"].ndim).tolist())}


def _expand(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    return {"x": _tensor(rng, tuple(1 for _ in shape)), "shape": shape}


def _flatten(draw: Any) -> dict[str, Any]:
    args = _one(draw)
    return {"x": args["x"], "start_dim": 0, "end_dim": -1}


def _pool(draw: Any) -> dict[str, Any]:
    return {"x": _tensor(_rng(draw), _nchw(draw))}


def _combine(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    n, c, h, w = _nchw(draw)
    return {"x": _tensor(rng, (n, c, h, w)), "channel_map": _tensor(rng, (n, c, 1, 1)),
            "spatial_map": _tensor(rng, (n, 1, h, w)), "combine": draw(st.sampled_from(["sum", "product"]))}


def _xent(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    n, k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return {"logits": _tensor(rng, (n, k)), "targets": rng.integers(0, k, n)}


def _im2col(draw: Any) -> dict[str, Any]:
    n, c, h, w = _nchw(draw)
    k = draw(st.integers(1, 3))
    return {"x": _rng(draw).standard_normal((n, c, h + k, w + k)), "kernel_size": k,
            "stride": 1, "padding": draw(st.integers(0, 1)), "dilation": 1}


def _col2im(draw: Any) -> dict[str, Any]:
    args = _im2col(draw)
    n, c, h, w = args["x"].shape
    cols = F.im2col(args.pop("x"), args["kernel_size"], padding=args["padding"])
    return {"cols": cols, "input_shape": (n, c, h, w), **args}


def _pow(draw: Any) -> dict[str, Any]:
    return {**_one(draw), "exponent": draw(st.sampled_from([2, 3, 0.5, -1, 0]))}


def _linear(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    n, i, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return {"x": _tensor(rng, (n, i)), "weight": _tensor(rng, (o, i)), "bias": _tensor(rng, (o,))}


def _ints(**defaults: Any) -> Callable[[Any], dict[str, Any]]:
    return lambda draw: dict(defaults)


def _module_input(make: Callable[[], nn.Module], shape: tuple[int, ...]) -> Callable[[Any], dict[str, Any]]:
    def build(draw: Any) -> dict[str, Any]:
        module = make()
        module.train(draw(st.booleans()))
        return {"module": module, "input": _tensor(_rng(draw), shape)}
    return build


def _state(draw: Any) -> dict[str, Any]:
    bam = nn.BAM(8, 4, dilation_conv_num=1)
    state = bam.state_dict()
    return {"module": bam, "state_dict": state, "strict": draw(st.booleans())}


def _manual(draw: Any) -> dict[str, Any]:
    rng = _rng(draw)
    params = nn.BAM(8, 4, dilation_conv_num=1).state_dict()
    return {"x": rng.standard_normal(_nchw(draw, c=8, n_min=2)), "params": params,
            "variant": "paper", "training": draw(st.booleans()), "dilation_val": 1, "eps": 1e-5}


def _manual_backward(draw: Any) -> dict[str, Any]:
    args = _manual(draw)
    y, cache = manual.bam_forward(**args)
    return {"dy": np.ones_like(y), "cache": cache}


def _gradcheck(draw: Any) -> dict[str, Any]:
    return {"fn": lambda t: (t * t).sum(), "inputs": [_tensor(_rng(draw), (2,))], "eps": 1e-6,
            "atol": 1e-5, "rtol": 1e-3}


def _tensor_ctor(draw: Any) -> dict[str, Any]:
    return {"data": _rng(draw).standard_normal(draw(st.integers(0, 3))), "requires_grad": False}


def _backward(draw: Any) -> dict[str, Any]:
    x = _tensor(_rng(draw), (3,))
    return {"tensor": x * 2.0, "grad": np.ones(3)}


def _getitem(draw: Any) -> dict[str, Any]:
    return {"tensor": _tensor(_rng(draw), (3, 4)), "index": (slice(0, 2), 1)}


def _optimizer(draw: Any) -> dict[str, Any]:
    return {"params": [_tensor(_rng(draw), (2,))], "lr": 0.1}


def _save(draw: Any) -> dict[str, Any]:
    return {"state_dict": {"w": np.ones(2)}, "path": _SAVE_TARGET}


def _load(draw: Any) -> dict[str, Any]:
    return {"path": _SAVE_TARGET}


_SAVE_TARGET = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"minibam-fuzz-{os.getpid()}.npz")


def _star(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(x, *sizes)`` called as ``(x, sizes)``: a tuple is spread, anything else passed alone."""
    def call(x: Any, **rest: Any) -> Any:
        (value,) = rest.values()
        return fn(x, *value) if isinstance(value, (tuple, list)) else fn(x, value)
    return call


def torch_f(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        import torch

        return getattr(torch.nn.functional if hasattr(torch.nn.functional, name) else torch, name)(*args, **kwargs)
    return call


ENTRIES = [
    *[Entry(n, _two, getattr(F, n), torch_f(n), aliases={"a": ("left operand",), "b": ("right operand",)})
      for n in ("add", "sub", "mul", "div")],
    *[Entry(n, _one, getattr(F, n), torch_f(n)) for n in ("neg", "exp", "log", "sigmoid", "relu")],
    Entry("pow", _pow, F.pow, torch_f("pow")),
    Entry("matmul", _two, F.matmul, torch_f("matmul")),
    Entry("linear", _linear, F.linear, torch_f("linear")),
    Entry("conv2d", _conv, F.conv2d, torch_f("conv2d")),
    Entry("batch_norm", _bn, F.batch_norm, torch_f("batch_norm"), mutable=("running_mean", "running_var")),
    Entry("sum", _axis, F.sum, None),
    Entry("mean", _axis, F.mean, None),
    Entry("reshape", _reshape, _star(F.reshape), None, aliases={"shape": ("sizes",)}),
    Entry("permute", _permute, _star(F.permute), None, aliases={"axes": ("permutation", "sizes")}),
    Entry("transpose", _permute, _star(F.transpose), None, aliases={"axes": ("permutation", "sizes")}),
    Entry("expand", _expand, _star(F.expand), None, aliases={"shape": ("sizes", "broadcast")}),
    Entry("flatten", _flatten, F.flatten, torch_f("flatten"), aliases={"start_dim": ("dim",), "end_dim": ("dim",)}),
    *[Entry(n, _pool, getattr(F, n), None)
      for n in ("global_avg_pool2d", "global_max_pool2d", "global_lse_pool2d",
                "channel_avg_pool", "channel_max_pool", "channel_pool")],
    Entry("global_lp_pool2d", lambda d: {**_pool(d), "norm_type": 2}, F.global_lp_pool2d, None),
    Entry("bam_combine", _combine, F.bam_combine, None),
    Entry("cross_entropy", _xent, F.cross_entropy, None),
    Entry("im2col", _im2col, F.im2col, None),
    Entry("col2im", _col2im, F.col2im, None),
    Entry("Tensor", _tensor_ctor, mb.Tensor, None),
    Entry("backward", _backward, lambda tensor, grad: tensor.backward(grad), None,
          errors=(TypeError, ValueError, RuntimeError)),
    Entry("index", _getitem, lambda tensor, index: tensor[index], None,
          errors=(TypeError, ValueError, IndexError), aliases={"index": ("indexing",)}),
    Entry("Linear", _ints(in_features=3, out_features=2, bias=True), nn.Linear, None),
    Entry("Conv2d", _ints(in_channels=2, out_channels=3, kernel_size=3, stride=1, padding=1, dilation=1),
          nn.Conv2d, None),
    Entry("BatchNorm2d", _ints(num_features=3, eps=1e-5, momentum=0.1), nn.BatchNorm2d, None),
    Entry("BatchNorm1d", _ints(num_features=3, eps=1e-5, momentum=0.1), nn.BatchNorm1d, None),
    Entry("BAM", _ints(gate_channel=16, reduction_ratio=4, dilation_conv_num=1, dilation_val=2, variant="paper"),
          nn.BAM, None),
    Entry("CBAM", _ints(gate_channels=8, reduction_ratio=2, pool_types=("avg", "max"), no_spatial=False),
          nn.CBAM, None, owner_names=("Linear", "Conv2d")),
    Entry("BAMNet", _ints(in_channels=1, num_classes=3, widths=(4, 8), reduction_ratio=2, dilation_val=1),
          nn.BAMNet, None, owner_names=("BAM", "CBAM", "Conv2d", "Linear")),  # a part's check may speak
    # A layer's forward may fail in the function it calls (Linear in linear, ...).
    *[Entry(name, _module_input(make, shape), lambda module, **rest: module(rest["input"]), None,
            owner_names=(name, function), aliases={"input": ("x", "channels", "shape")},
            label=f"{name}.forward")
      for name, function, make, shape in [
          ("Linear", "linear", lambda: nn.Linear(3, 2), (2, 3)),
          ("Conv2d", "conv2d", lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 4, 4)),
          ("BatchNorm2d", "batch_norm", lambda: nn.BatchNorm2d(3), (2, 3, 2, 2)),
          ("BAM", "BAM", lambda: nn.BAM(8, 4, dilation_conv_num=1, dilation_val=1), (2, 8, 3, 3)),
          ("CBAM", "CBAM", lambda: nn.CBAM(8, 2), (2, 8, 3, 3)),
      ]],
    # A refused load keeps PyTorch's words, "Error(s) in loading state_dict for BAM" (API.md
    # fixes no wording, and where it is silent minibam does what PyTorch does): that names
    # the call as well as "load_state_dict" would. Its StateDictError is a RuntimeError (as
    # PyTorch's), KeyError and ValueError, all documented here.
    Entry("load_state_dict", _state, lambda module, state_dict, strict: module.load_state_dict(state_dict, strict),
          None, errors=(TypeError, ValueError, RuntimeError, KeyError), owner_names=("loading state_dict",),
          aliases={"state_dict": ("checkpoint", "mapping", "Error(s) in loading")}),
    Entry("bam_forward", _manual, manual.bam_forward, None),
    Entry("bam_backward", _manual_backward, manual.bam_backward, None),
    Entry("gradcheck", _gradcheck, mb.gradcheck, None, errors=(TypeError, ValueError, mb.GradcheckError)),
    Entry("SGD", _optimizer, optim.SGD, None, aliases={"params": ("parameter", "parameters")}),
    Entry("Adam", _optimizer, optim.Adam, None, aliases={"params": ("parameter", "parameters")}),
    Entry("save", _save, mb.save, None, errors=(TypeError, ValueError, OSError)),
    Entry("load", _load, mb.load, None, errors=(TypeError, ValueError, OSError)),
]


# ------------------------------------------------------------------------- the test


def _snapshot(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.copy()
    if isinstance(value, mb.Tensor):
        return value.data.copy()
    return None


def _same(before: Any, value: Any) -> bool:
    now = value.data if isinstance(value, mb.Tensor) else value
    return before.shape == now.shape and np.array_equal(before, now, equal_nan=before.dtype.kind in "fc")


def _finite_floats(args: dict[str, Any]) -> bool:
    for v in args.values():
        if isinstance(v, mb.Tensor) and not np.all(np.isfinite(v.data)):
            return False
        if isinstance(v, np.ndarray) and (v.dtype.kind not in "iuf" or not np.all(np.isfinite(v))):
            return False
        if isinstance(v, (bool, np.bool_)):
            continue
        if isinstance(v, (float, np.floating)) and not np.isfinite(v):
            return False
    return True


def _compare_with_torch(entry: Entry, args: dict[str, Any], before: dict[str, Any], result: Any) -> None:
    """``before``: the arguments as they were, for those the call changes by design."""
    torch = pytest.importorskip("torch")

    def to_torch(v: Any) -> Any:
        if isinstance(v, mb.Tensor):
            return torch.tensor(np.array(v.data, dtype=np.float64))
        if isinstance(v, np.ndarray):
            return torch.tensor(np.array(v, dtype=np.float64))
        return v

    values = [before.get(k) if k in entry.mutable else v for k, v in args.items()]
    try:
        expected = entry.torch(*[to_torch(v) for v in values])
    except (RuntimeError, TypeError, ValueError, IndexError):
        return  # PyTorch refuses what minibam accepts (e.g. NumPy-style broadcasting rules)
    np.testing.assert_allclose(np.asarray(result.data, dtype=np.float64), expected.numpy(),
                               rtol=1e-4 if result.dtype == np.float32 else 1e-9, atol=1e-9,
                               err_msg=f"{entry.name} differs from PyTorch for {args}")


@pytest.fixture(scope="module", autouse=True)
def _report(tmp_path_factory: Any):
    # Hostile paths ("0", "", b"x") are relative: let them land in a scratch folder.
    start = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("fuzz"))
    # Sizes are judged against 256 MiB instead of the free memory: a hostile size is then
    # refused by the same check (its message is what is tested) without this test ever
    # allocating gigabytes on a machine it shares.
    real_limits = _checks.memory_limit, manual_checks.memory_limit
    _checks.memory_limit = manual_checks.memory_limit = lambda: 256 << 20
    yield
    _checks.memory_limit, manual_checks.memory_limit = real_limits
    os.chdir(start)
    path = os.environ.get("MINIBAM_FUZZ_REPORT")
    if path:
        with open(path, "w") as handle:
            json.dump({k: dict(v) for k, v in sorted(OUTCOMES.items())}, handle, indent=1)
    if os.path.exists(_SAVE_TARGET):
        os.remove(_SAVE_TARGET)


# inf and nan come back silently (docs/guarantees.md, "Warnings"): a RuntimeWarning fails.
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e.name}-{i}" for i, e in enumerate(ENTRIES)])
@settings(max_examples=EXAMPLES, deadline=None, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_call_works_or_fails_the_documented_way(entry: Entry, data: Any) -> None:
    check_one_call(entry, data)


def check_one_call(entry: Entry, data: Any) -> None:
    """Build a valid call, replace up to two arguments, call, judge (see the docstring)."""
    args = entry.valid(data.draw)
    names = [n for n in args if n not in ("tensor", "module")]  # the receiver of a method stays
    replaced = data.draw(st.lists(st.sampled_from(names), max_size=2, unique=True), label="replaced") if names else []
    for name in replaced:
        args[name] = data.draw(HOSTILE, label=name)
    call_args = args
    before = {k: _snapshot(v) for k, v in call_args.items()}
    label = entry.label or entry.name
    try:
        result = entry.call(**call_args)
    except entry.errors as error:
        message = str(error)
        OUTCOMES[label][type(error).__name__] += 1
        assert not INTERNAL.search(message), f"{entry.name}: a raw message for {replaced}: {message!r}"
        owner = (entry.name, *entry.owner_names)
        assert any(o.lower() in message.lower() for o in owner) or isinstance(error, OSError), (
            f"the message does not name {entry.name}: {message!r}")
        if replaced and not isinstance(error, OSError):
            mentions = [n for n in replaced for word in (n, *entry.aliases.get(n, ()))
                        if re.search(rf"(?<![A-Za-z_]){re.escape(word)}(?![A-Za-z_])", message)]
            assert mentions or _names_a_value(message, args, replaced), (
                f"{entry.name}: the message names none of {replaced}: {message!r}")
    else:
        OUTCOMES[label]["works"] += 1
        if entry.torch is not None and not replaced and _finite_floats(call_args):
            _compare_with_torch(entry, call_args, before, result)
    finally:
        for k, v in call_args.items():
            if before[k] is not None and k not in entry.mutable:
                assert _same(before[k], v), f"{entry.name} changed the caller's {k}"


def _names_a_value(message: str, args: dict[str, Any], replaced: list[str]) -> bool:
    """A message may name the argument by its shape or value instead of its name."""
    for name in replaced:
        v = args[name]
        shape = getattr(v, "shape", None)
        if shape is not None and str(tuple(shape)) in message:
            return True
        if isinstance(v, (int, float, str)) and repr(v) in message:
            return True
        # A 0-d integer array (np.array(254, dtype=np.uint8)) is named by its value.
        if isinstance(v, (np.ndarray, np.generic)) and v.ndim == 0 and v.dtype.kind in "iu" \
                and repr(v.item()) in message:
            return True
    return False


# ------------------------------------------------------------------------------ CLI

CLI_VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "1.5", "nan", "inf", "1e400", "x", "10" * 20, "2,3",
                     "4,8,8", "0,8,8", "2,16,100000,100000", "1,2,3,4,5", "\x00", "--", "-"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=6),
)


@st.composite
def cli_argvs(draw: Any) -> list[str]:
    command = draw(st.sampled_from(["check", "reference", "compare", "bench"]))
    options = {
        "check": ["--json", "--dtype", "--seed"],
        "reference": ["--channels", "--shape", "--variant", "--seed", "--dtype", "--reduction",
                      "--dilation-conv-num", "--dilation", "--eval"],
        "compare": ["--json", "--dilation", "--eval"],
        "bench": ["--shapes", "--dtype", "--repeat", "--reduction", "--seed", "--threads"],
    }[command]
    argv = [command]
    if command == "compare":
        argv.append(draw(st.sampled_from(["/nonexistent.npz", "/dev/null", "/", "missing.npz"])))
    for option in draw(st.lists(st.sampled_from(options), max_size=3, unique=True)):
        argv.append(option)
        if option not in ("--json", "--eval"):
            argv.append(draw(CLI_VALUES))
    if command == "reference":
        argv += ["--out", "/nonexistent/dir/x.npz"]  # never a real file: the run must not write
    if command in ("check", "bench"):
        argv += draw(st.sampled_from([["--bogus"], ["--shapes", "0,0,0,0"], ["--repeat", "0"]]))
    return argv


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=cli_argvs())
def test_every_cli_command_refuses_bad_input_in_one_line(argv: list[str], capsys: Any) -> None:
    from minibam.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    OUTCOMES[f"minibam {argv[0]}"][f"exit {code}"] += 1
    assert code == 2, (argv, code, out, err)
    assert err.count("\n") == 1 and err.startswith("minibam"), (argv, err)
    assert "Traceback" not in err and not INTERNAL.search(err), (argv, err)
