"""Argument checks shared by the ops, so every op fails the same clear way."""

from __future__ import annotations

from typing import Any

from minibam.tensor import Tensor


def require_tensor(value: Any, name: str, op: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a minibam Tensor, got {type(value).__name__}")
    return value


def optional_tensor(value: Any, name: str, op: str) -> Tensor | None:
    return None if value is None else require_tensor(value, name, op)


def require_ndim(t: Tensor, ndims: tuple[int, ...], name: str, op: str, layout: str) -> None:
    if t.ndim not in ndims:
        raise ValueError(
            f"{op}: {name} must be {layout} ({' or '.join(map(str, ndims))}-D), "
            f"got shape {t.shape}"
        )


def pair(value: Any, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int,)) and not hasattr(v, "__index__"):
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        if int(v) < minimum:
            raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])
