"""Reading a user's attention module from its layers: what BAM's and CBAM's readers share.

A reader walks the layer calls of one forward pass (`minibam.verify.harness.trace`) and
asks of each layer what kind it is: a layer of the channel MLP (a Linear, or a 1x1 conv
on a pooled 1x1 map), a conv on the feature map, a batch norm after one of them, a ReLU.
Problems are collected in the user's names, so that a refusal lists every layer it could
not place, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minibam.verify.harness import Call, import_torch, is_batch_norm


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
