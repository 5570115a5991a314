"""The module-agnostic part of verifying a user's PyTorch module against minibam.

Nothing here knows what BAM is: it copies the user's module (``copy.deepcopy``, so the
caller's object is never touched), gives every parameter and batch-norm buffer random
non-trivial values, runs the copy forward and backward under a random upstream gradient
while forward hooks record each parameterised layer's input and output, and compares
the results with minibam's through `minibam.checks.compare.compare`. A module's
specifics (which minibam model to build, how names map) live beside it, e.g.
`minibam.verify.bam`.

torch is imported by the functions that need it, never at module import.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minibam.checks.compare import Row, compare, largest

Arrays = dict[str, np.ndarray]


class ModuleError(ValueError):
    """The user's module cannot be checked at all (it returns the wrong shape): bad
    input, as opposed to a module that runs and differs."""


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (``Type`` alone when the message is empty)."""
    first = (str(error).splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class ModuleRaised(Exception):
    """The user's module raised on a legal input (``label``: mode and shape, as in
    "eval (2,16,8,8)"). A BAM that crashes on a legal input is a wrong BAM: ``verify``
    turns this into a failed report, never into an error of its own."""

    def __init__(self, label: str, error: BaseException) -> None:
        super().__init__(f"{label}: {one_line(error)}")
        self.label, self.error = label, error

    @property
    def traceback(self) -> str:
        return "".join(traceback.format_exception(type(self.error), self.error, self.error.__traceback__))


def case_label(training: bool, shape: Sequence[int]) -> str:
    """How rows and notes name a case: "train (4,16,8,8)"."""
    return f"{'train' if training else 'eval'} ({','.join(map(str, shape))})"


def import_torch() -> Any:
    """The torch module, or ImportError with what to do."""
    try:
        import torch
    except ImportError as error:
        raise ImportError("minibam.verify needs PyTorch to run your module: pip install torch") from error
    return torch


def is_batch_norm(module: Any) -> bool:
    torch = import_torch()
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def layers_with_parameters(module: Any) -> dict[str, Any]:
    """Submodules that own parameters or buffers directly, by dotted name, in registration order."""
    return {name: m for name, m in module.named_modules()
            if next(m.parameters(recurse=False), None) is not None
            or next(m.buffers(recurse=False), None) is not None}


# Arrays of an input's size alive at once while one case is checked (x, dy, y, dx and the
# recorded layer outputs on both sides): a generous count, to stop absurd requests only.
_FULL_SIZE_ARRAYS = 16


def checked_arguments(who: str, variant: Any, variants: Sequence[str], dtype: Any, training: Any,
                      shapes: Any, seed: Any) -> tuple[list[bool], list[tuple[int, ...]] | None]:
    """The arguments every ``verify`` function shares, checked before anything is copied
    or allocated: the modes of ``training`` as a list, and ``shapes`` as a list of integer
    tuples (``None`` stays ``None``). ``ValueError`` for an unknown variant or dtype, no
    mode, a negative seed or a shape whose check could not fit in memory; ``TypeError``
    for shapes that are not a sequence of sequences of integers (one bare shape included)."""
    from minibam.ops._checks import check_fits

    if variant != "auto" and variant not in variants:
        raise ValueError(f"{who}: variant must be 'auto' or one of {tuple(variants)}, got {variant!r}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"{who}: dtype must be 'float64' or 'float32', got {dtype!r}")
    modes = [bool(t) for t in ((training,) if isinstance(training, bool) else training)]
    if not modes:
        raise ValueError(f"{who}: training must name at least one mode, e.g. (True, False)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{who}: seed must be a non-negative integer, got {seed!r}")
    if shapes is None:
        return modes, None
    try:
        out = [tuple(operator.index(v) for v in s) for s in shapes]
    except TypeError:
        raise TypeError(f"{who}: shapes must be a sequence of (N, C, H, W) shapes, "
                        f"e.g. [(4, 64, 8, 8)], got {shapes!r}") from None
    for shape in out:
        if shape and min(shape) >= 1:
            check_fits(who, "an input", shape, 8 * _FULL_SIZE_ARRAYS,
                       f" (with the {_FULL_SIZE_ARRAYS} arrays of its size a check keeps)")
    return modes, out


def working_copy(module: Any, dtype: str) -> Any:
    """A deep copy of ``module`` in ``dtype`` ("float64" or "float32"), gradients cleared.
    The caller's module is read, never written."""
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"verify: expected a torch.nn.Module, got {type(module).__name__}")
    twin = copy.deepcopy(module)
    twin.to(torch.float64 if dtype == "float64" else torch.float32)
    for p in twin.parameters():
        p.grad = None
        p.requires_grad_(True)
    return twin


def randomise(module: Any, rng: np.random.Generator) -> None:
    """Random, non-trivial values for every parameter and batch-norm buffer of ``module``
    (in place; ``module`` is a working copy). Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.5^2);
    batch norm: weight in [0.5, 1.5], bias ~ N(0, 0.5^2), running mean ~ N(0, 0.5^2),
    running variance in [0.5, 2], so that neither its defaults nor eval mode hide a bug."""
    torch = import_torch()
    with torch.no_grad():
        for m in module.modules():
            bn = is_batch_norm(m)
            for name, p in m.named_parameters(recurse=False):
                shape = tuple(p.shape)
                if bn and name == "weight":
                    value = rng.uniform(0.5, 1.5, shape)
                elif p.ndim >= 2:
                    value = rng.normal(0.0, 1.0 / np.sqrt(max(1, int(np.prod(shape[1:])))), shape)
                else:
                    value = rng.normal(0.0, 0.5, shape)
                p.copy_(torch.from_numpy(value))
            if bn:
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.from_numpy(rng.normal(0.0, 0.5, tuple(m.running_mean.shape))))
                    m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, tuple(m.running_var.shape))))
                if m.num_batches_tracked is not None:
                    m.num_batches_tracked.fill_(int(rng.integers(1, 1000)))


def numpy_state(module: Any) -> Arrays:
    """``module.state_dict()`` as NumPy copies."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


@dataclass
class Run:
    """One forward and backward pass: output, gradients, buffers after, and per hooked
    layer (in call order) its input and output."""

    y: np.ndarray
    dx: np.ndarray
    grads: Arrays
    buffers: Arrays
    steps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@contextlib.contextmanager
def session() -> Iterator[None]:
    """The modes a check needs, whatever the caller's, restored on exit: PyTorch records
    gradients (even inside ``torch.no_grad()`` or ``torch.inference_mode()``), minibam
    records a graph (even inside ``mb.no_grad()``), and minibam's global random generator
    is left as it was (building minibam's modules draws initial weights from it)."""
    from minibam import _config
    from minibam import random as mb_random

    torch = import_torch()
    generator = mb_random.generator()
    saved = generator.bit_generator.state
    grad_mode = _config._mode.grad_enabled
    _config._mode.grad_enabled = True
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        _config._mode.grad_enabled = grad_mode
        generator.bit_generator.state = saved
        mb_random._generator = generator


def input_channels(module: Any) -> int | None:
    """C of an attention module: the most channels any Linear or Conv2d layer reads
    (its channel MLP's first layer and its spatial branch's reduction read all C)."""
    torch = import_torch()
    widths = [m.in_features for m in module.modules() if isinstance(m, torch.nn.Linear)]
    widths += [m.in_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    return int(max(widths)) if widths else None


def apply_key_map(who: str, twin: Any, layers: dict[str, str], key_map: Mapping[str, str]) -> None:
    """Place the layers ``key_map`` names ({their layer: minibam's layer}) as it says, over
    what the structure said. ``ValueError`` for names the module does not have, and for
    two layers placed on one."""
    owners = layers_with_parameters(twin)
    unknown = sorted(k for k in key_map if k not in owners)
    if unknown:
        raise ValueError(f"{who}: key_map names keys the module does not have: {', '.join(unknown)}")
    layers.update(key_map)
    values = list(layers.values())
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"{who}: cannot place the module's layers; placed twice: " + ", ".join(
            f"{v} (from {', '.join(k for k in layers if layers[k] == v)})" for v in twice))


def load_into(who: str, model: Any, twin: Any, state: Arrays, layers: Mapping[str, str]) -> dict[str, str]:
    """Copy the working copy's parameters and buffers (``state``) into minibam's ``model``
    through ``layers`` (their layer -> ours), reshaped to minibam's shapes (a 1x1 conv's
    weight fills a Linear's), and each batch norm's eps and momentum; return their
    state_dict keys -> ours. ``ValueError`` naming, in the user's keys, what does not fit."""
    ours_state = model.state_dict()
    names = {k: f"{layers[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}" for k in state
             if k.rsplit(".", 1)[0] in layers}
    problems = [f"{k} (minibam's {model.__class__.__name__} of this structure has no {v})"
                for k, v in names.items() if v not in ours_state]
    problems += [f"{k} has shape {tuple(state[k].shape)}, minibam's {v} {tuple(ours_state[v].shape)}"
                 for k, v in names.items() if v in ours_state and state[k].size != ours_state[v].size]
    unread = sorted(k for k in state if k not in names)
    missing = sorted(set(ours_state) - set(names.values()))
    if unread:
        problems.append("not placed: " + ", ".join(unread))
    if missing:
        problems.append("minibam's module of this structure also needs " + ", ".join(missing))
    if problems:
        raise ValueError(f"{who}: cannot place the module's parameters: " + "; ".join(problems))
    model.load_state_dict({v: state[k].reshape(ours_state[v].shape) for k, v in names.items()}, strict=True)
    theirs = dict(twin.named_modules())
    ours = dict(model.named_modules())
    for their, our in layers.items():
        if is_batch_norm(theirs[their]):
            ours[our].eps, ours[our].momentum = theirs[their].eps, theirs[their].momentum
    return names


def run_minibam(model: Any, recorded: set[str], x: np.ndarray, dy: np.ndarray, training: bool,
                buffers_before: Arrays) -> Run:
    """Forward and backward of minibam's ``model`` from ``buffers_before``; ``steps``
    holds the input and output of each layer in ``recorded`` at its first call (what the
    user's forward hooks see), caught by wrapping those layers' ``forward``."""
    from minibam.tensor import Tensor

    model.load_state_dict(buffers_before, strict=False)
    model.train(training)
    for p in model.parameters():
        p.grad = None
    steps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    modules = dict(model.named_modules())

    def recorder(name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
        def record(value: Any, *rest: Any) -> Any:
            out = forward(value, *rest)
            steps.setdefault(name, (np.array(value.data), np.array(out.data)))
            return out
        return record

    wrapped = [modules[n] for n in recorded if n in modules]
    for m in wrapped:  # an instance attribute shadows the class's forward, for this run only
        object.__setattr__(m, "forward", recorder(next(k for k, v in modules.items() if v is m), m.forward))
    try:
        xt = Tensor(x, requires_grad=True)
        y = model(xt)
        y.backward(dy)
    finally:
        for m in wrapped:
            m.__dict__.pop("forward", None)
    grads = {k: p.grad.copy() if p.grad is not None else np.zeros(p.shape) for k, p in model.named_parameters()}
    buffers = {k: np.array(v.data if isinstance(v, Tensor) else v) for k, v in model.named_buffers()}
    return Run(y.data.copy(), xt.grad.copy(), grads, buffers, steps)


def run_torch(module: Any, x: np.ndarray, dy: np.ndarray, training: bool,
              buffers_before: Arrays) -> Run:
    """Forward and backward of the working copy ``module`` from the buffers
    ``buffers_before`` (restored first, so every run starts from the same state)."""
    torch = import_torch()
    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(torch.from_numpy(buffers_before[name]))
    for p in module.parameters():
        p.grad = None
    module.train(training)
    steps: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(mod: Any, inputs: Any, output: Any) -> None:
            first = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
            if name not in steps and torch.is_tensor(first) and torch.is_tensor(output):
                # cloned now: a later in-place ReLU would otherwise change what was seen
                steps[name] = (first.detach().double().numpy().copy(), output.detach().double().numpy().copy())
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in layers_with_parameters(module).items()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread beats several fighting over cores
    try:
        xt = torch.tensor(x, dtype=dtype, requires_grad=True)
        y = module(xt)
        if not torch.is_tensor(y) or tuple(y.shape) != tuple(x.shape):
            got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise ModuleError(f"verify: the module's output is {got} for an input of shape {tuple(x.shape)}; "
                             f"an attention module must return its input's shape")
        y.backward(torch.as_tensor(dy, dtype=dtype))
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()
    grads = {k: (np.zeros(tuple(p.shape)) if p.grad is None else p.grad.detach().numpy().copy())
             for k, p in module.named_parameters()}
    buffers = {k: b.detach().numpy().copy() for k, b in module.named_buffers()}
    return Run(y.detach().numpy().copy(), xt.grad.detach().numpy().copy(), grads, buffers, steps)


def _noise(low: np.ndarray | None, exact: np.ndarray) -> float:
    if low is None or exact.size == 0:
        return 0.0
    return float(np.max(np.abs(np.asarray(low, np.float64) - exact)))


def compare_runs(label: str, theirs: Run, ours: Run, rtol: float, atol: float,
                 names: dict[str, str], ours_low: Run | None = None) -> list[Row]:
    """Rows for one case, in the user's names: ``y``, ``dx``, ``grad.<their key>`` for every
    parameter and ``after.<their key>`` for every buffer; ``names`` maps their state_dict
    keys to ours. Gradients share the case's scale (the zero-by-construction rule).
    ``ours_low``: the same run of ours in float32, whose distance from ``ours`` is the
    round-off allowance of a float32 check (``compare``'s ``noise``)."""
    def low(kind: str, name: str = "") -> np.ndarray | None:
        if ours_low is None:
            return None
        return getattr(ours_low, kind) if not name else getattr(ours_low, kind).get(name)

    grad_pairs = [("dx", theirs.dx, ours.dx, low("dx"))]
    grad_pairs += [(f"grad.{k}", g.reshape(ours.grads[names[k]].shape), ours.grads[names[k]],
                    low("grads", names[k])) for k, g in theirs.grads.items() if k in names]
    scale = largest(pair[2] for pair in grad_pairs)
    rows = [compare(f"{label} y", theirs.y, ours.y, rtol, atol, noise=_noise(low("y"), ours.y))]
    rows += [compare(f"{label} {n}", a, e, rtol, atol, case_scale=scale, noise=_noise(lo, e))
             for n, a, e, lo in grad_pairs]
    for k, b in theirs.buffers.items():
        if k not in names:  # a layer the forward pass never calls
            continue
        expected = ours.buffers[names[k]]
        exact = b.dtype.kind in "iu"
        rows.append(compare(f"{label} after.{k}", b.reshape(expected.shape), expected,
                            0.0 if exact else rtol, 0.0 if exact else atol,
                            noise=0.0 if exact else _noise(low("buffers", names[k]), expected)))
    return rows


def step_rows(theirs: Run, ours: Run, order: Sequence[str], layers: Mapping[str, str],
              rtol: float, atol: float) -> list[tuple[str, str, Row]]:
    """For each of the user's layers in call ``order`` that ``layers`` maps to one of
    ``ours.steps``: ("input" | "output", their layer name, Row)."""
    rows = []
    for their in order:
        ours_name = layers.get(their)
        if their not in theirs.steps or ours_name not in ours.steps:
            continue
        for i, what in enumerate(("input", "output")):
            a, e = theirs.steps[their][i], ours.steps[ours_name][i]
            a = a.reshape(e.shape) if a.size == e.size else np.full(e.shape, np.nan)
            rows.append((what, their, compare(what, a, e, rtol, atol)))
    return rows


def random_inputs(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Input ~ N(0.2, 1) (a non-zero mean, as real feature maps have) and upstream N(0, 1)."""
    return rng.standard_normal(shape) + 0.2, rng.standard_normal(shape)


def run_cases(twin: Any, shapes: Sequence[Sequence[int]], modes: Sequence[bool], seed: int, dtype: str,
              buffers: Arrays, notes: list[str]) -> tuple[list[tuple], ModuleRaised | None]:
    """The user's module on every shape and mode: ``(label, x, dy, mode, their Run or None)``
    per case, and the first exception it raised (also noted in ``notes``), if any.

    A raise on a legal input is a finding, kept as that case's missing run; a wrong
    output shape (`ModuleError`) is bad input and propagates.
    """
    cases, first_raise = [], None
    for i, shape in enumerate(shapes):
        x, dy = random_inputs(tuple(shape), np.random.default_rng([seed, i]))
        if dtype == "float32":  # what the module sees, exactly, so that float64 sees the same
            x, dy = x.astype(np.float32).astype(np.float64), dy.astype(np.float32).astype(np.float64)
        for mode in modes:
            label = case_label(mode, shape)
            try:
                theirs = run_torch(twin, x, dy, mode, buffers)
            except ModuleError:
                raise
            except Exception as error:  # the module's own failure on this shape is a finding
                notes.append(f"{label}: the module raised {one_line(error)}")
                first_raise, theirs = first_raise or ModuleRaised(label, error), None
            cases.append((label, x, dy, mode, theirs))
    return cases, first_raise
