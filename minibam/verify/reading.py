"""Reading a user's attention module from its layers: what BAM's and CBAM's readers share.

`trace` records the layer calls of one forward pass (forward hooks on a throwaway copy);
a reader walks them and asks of each layer what kind it is: a layer of the channel MLP
(a Linear, or a 1x1 conv on a pooled 1x1 map), a conv on the feature map, a batch norm
after one of them, a ReLU.
Problems are collected in the user's names, so that a refusal lists every layer it could
not place, once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minibam.verify.harness import (
    ModuleRaised,
    case_label,
    import_torch,
    is_batch_norm,
    layers_with_parameters,
)


@dataclass
class Call:
    """One call of a layer in a forward pass: its dotted name, the module, and the shapes
    of its first input and its output."""

    name: str
    module: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    has_parameters: bool


def trace(module: Any, shapes: Sequence[Sequence[int]]) -> list[Call]:
    """Every call of a leaf layer (and of every layer owning parameters) in one forward
    pass, in order: eval mode, no gradients, on a throwaway copy, on the first of
    ``shapes`` the module runs on (`ModuleRaised` for the first if it runs on none)."""
    first_error = None
    for shape in shapes:
        try:
            return _trace(module, shape)
        except ModuleRaised as error:
            first_error = first_error or error
    raise first_error


def _trace(module: Any, shape: Sequence[int]) -> list[Call]:
    torch = import_torch()
    twin = copy.deepcopy(module).eval()
    owners = layers_with_parameters(twin)
    calls: list[Call] = []

    def hook(name: str) -> Callable[..., None]:
        def record(mod: Any, inputs: Any, output: Any) -> None:
            first = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
            calls.append(Call(name, mod, _shape(torch, first), _shape(torch, output), name in owners))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in twin.named_modules()
               if name and (name in owners or next(m.children(), None) is None)]
    x = np.random.default_rng(0).standard_normal(tuple(shape)) + 0.2
    try:
        with torch.no_grad():
            twin(torch.as_tensor(x, dtype=next(twin.parameters()).dtype))
    except Exception as error:  # on a legal input: a finding, reported as a failure
        raise ModuleRaised(case_label(False, shape), error) from None
    finally:
        for h in handles:
            h.remove()
    return calls


def _shape(torch: Any, value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if torch.is_tensor(value) else ()


_SHAPE_ONLY = ("Flatten", "Unflatten", "Dropout", "Dropout2d")


def before(calls: Sequence[Call], name: str) -> str:
    """What feeds layer ``name`` in the user's forward pass, in their names: the
    parameter-free layer called just before it in the same part of the module (an
    activation, a pool), else the part of the module that holds ``name``."""
    first = next(i for i, c in enumerate(calls) if c.name == name)
    top = name.split(".")[0]
    for c in reversed(calls[:first]):
        if type(c.module).__name__ in _SHAPE_ONLY:
            continue
        if not c.has_parameters and c.name.split(".")[0] == top:
            return c.name
        break
    return top


def widths(module: Any) -> tuple[int, int]:
    """(in, out) of a Linear or a Conv2d."""
    torch = import_torch()
    if isinstance(module, torch.nn.Linear):
        return int(module.in_features), int(module.out_features)
    return int(module.in_channels), int(module.out_channels)


def is_mlp_layer(call: Call) -> bool:
    """A Linear, or a 1x1 conv applied to a pooled (N, C, 1, 1) map."""
    torch = import_torch()
    m = call.module
    if isinstance(m, torch.nn.Linear):
        return True
    return isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) == (1, 1) \
        and len(call.in_shape) == 4 and call.in_shape[2:] == (1, 1)


def is_conv(module: Any) -> bool:
    return isinstance(module, import_torch().nn.Conv2d)


def is_relu(module: Any) -> bool:
    return isinstance(module, import_torch().nn.ReLU)


def describe_layer(call: Call) -> str:
    """A layer as a refusal names it: "ch_att.fc (Conv2d 64->4, kernel (3, 3))"."""
    m = call.module
    kind = type(m).__name__
    if is_conv(m):
        return f"{call.name} ({kind} {m.in_channels}->{m.out_channels}, kernel {tuple(m.kernel_size)})"
    if hasattr(m, "in_features"):
        return f"{call.name} ({kind} {m.in_features}->{m.out_features})"
    return f"{call.name} ({kind})"


def first_calls(calls: Sequence[Call]) -> list[Call]:
    """Each parameterised layer's first call, with the ReLU calls kept (every one)."""
    seen: set[str] = set()
    out = []
    for c in calls:
        if is_relu(c.module):
            out.append(c)
        elif c.has_parameters and c.name not in seen:
            seen.add(c.name)
            out.append(c)
    return out


def uniform(values: Sequence[Any], what: str, names: Sequence[str], problems: list[str]) -> Any:
    """The one value all ``values`` share; a problem naming the layers when they differ."""
    if len(set(values)) > 1:
        problems.append(f"{what} differ between " + ", ".join(f"{n} ({v})" for n, v in zip(names, values)))
    return values[0] if values else None


def check_batch_norm(call: Call, problems: list[str]) -> None:
    m = call.module
    if not (m.affine and m.track_running_stats):
        problems.append(f"{call.name} (a BatchNorm without affine parameters or running statistics)")


def momenta(layers: dict[str, str], modules: dict[str, Any]) -> float | None | dict[str, Any]:
    """The batch norms' momentum: one value when they share it, else by their names
    (``None``: no batch norm; PyTorch's ``momentum=None`` is "cumulative average")."""
    found = {name: "cumulative average" if modules[name].momentum is None else modules[name].momentum
             for name in layers if is_batch_norm(modules[name])}
    values = set(found.values())
    if len(values) <= 1:
        return next(iter(values), None)
    return found


_ACTIVATIONS = ("Tanh", "LeakyReLU", "ReLU6", "SiLU", "GELU", "ELU", "Hardswish", "Mish", "PReLU", "Softplus")


def other_activations(calls: Sequence[Call]) -> list[str]:
    """Notes for activation layers that are not ReLU (minibam's BAM and CBAM use ReLU):
    the check runs with ReLU, so the module fails there, and the note says why."""
    names = list(dict.fromkeys(f"{c.name} ({type(c.module).__name__})" for c in calls
                               if type(c.module).__name__ in _ACTIVATIONS))
    if not names:
        return []
    return ["activation layers other than ReLU: " + ", ".join(names) + "; minibam's module has a ReLU "
            "there, so the check compares with ReLU"]
