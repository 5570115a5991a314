"""Labels of a drawn graph's nodes: an op with its hyper-parameters, a tensor with its
shape, dtype and gradient norm."""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.tensor import Tensor

# Hyper-parameters shown short, and the values PyTorch uses by default (left out).
_SHORT = {"kernel": "k", "kernel_size": "k", "stride": "s", "padding": "p", "dilation": "d"}
_DEFAULT = {"stride": 1, "padding": 0, "dilation": 1}
_DERIVED = {"out"}  # conv's output size: the output tensor's label shows it


def op_label(name: str, params: dict) -> str:
    flat: list[tuple[str, Any]] = []
    for key, value in params.items():
        # A named tuple of hyper-parameters (conv's geometry) is shown field by field.
        flat += value._asdict().items() if hasattr(value, "_asdict") else [(key, value)]
    # An op's working dtype is its output's, already on the output's node; only a cast
    # is about its dtype.
    hidden = _DERIVED if name == "Cast" else {*_DERIVED, "dtype"}
    shown = [_param_text(key, value) for key, value in flat if key not in hidden]
    return " ".join([name, *sorted(text for text in shown if text is not None)])


def _param_text(key: str, value: Any) -> str | None:
    if value is None or value is False or isinstance(value, np.ndarray):
        return None
    if value is True:
        return key
    if key in _SHORT:
        if isinstance(value, (tuple, list)) and len(set(value)) == 1:
            value = value[0]
        if key in _DEFAULT and value == _DEFAULT[key]:
            return None
        key = _SHORT[key]
    if key == "index":
        text = _index_text(value)
    elif isinstance(value, (np.dtype, type)):
        text = np.dtype(value).name
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(tuple(value)) if isinstance(value, list) else str(value)
    if len(text) > 30:
        text = text[:29] + "..."
    return f"{key}={text}"


def _index_text(index: Any) -> str:
    """``x[:, 1:3]``-style text for a basic index."""
    parts = index if isinstance(index, tuple) else (index,)
    shown = []
    for p in parts:
        if isinstance(p, slice):
            text = ":".join("" if v is None else str(v) for v in (p.start, p.stop))
            shown.append(text if p.step is None else f"{text}:{p.step}")
        elif p is Ellipsis:
            shown.append("...")
        elif p is None:
            shown.append("None")
        else:
            shown.append(str(p))
    return "[" + ", ".join(shown) + "]"


def tensor_label(t: Tensor, name: str | None, grads: bool) -> str:
    lines = [] if name is None else [name]
    if name is None and t._node is None and not t.requires_grad and t.data.size == 1:
        lines.append(f"const {t.data.item():g}")
    else:
        lines.append(f"{tuple(t.shape)} {t.dtype}")
    if grads and t.grad is not None:
        lines.append(f"|grad| = {float(np.linalg.norm(t.grad)):.3g}")
    return "\n".join(lines)


