"""Argument checks shared by the ops, so every op fails the same clear way."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

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


def integer(value: Any, name: str, op: str, minimum: int | None = None) -> int:
    """The one check of every integer hyper-parameter (kernel size, stride, padding,
    dilation, channels, ratios, counts, axes): a Python or NumPy integer, at least
    ``minimum``. Floats (even 2.0), 0-d arrays and bools are a ``TypeError``: PyTorch
    refuses them too, and truncating ``np.array(1.7)`` to 1 would hide a caller's bug."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {_describe(value)}")
    if minimum is not None and value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{op}: {name} must be {kind}, got {int(value)}")
    return int(value)


def flag(value: Any, name: str, op: str) -> bool:
    """A yes/no argument: a bool (Python or NumPy), or the int 0 or 1."""
    if not isinstance(value, (bool, np.bool_)) and not (
        isinstance(value, (int, np.integer)) and value in (0, 1)
    ):
        raise TypeError(f"{op}: {name} must be a bool, got {_describe(value)}")
    return bool(value)


def pair(value: Any, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {_describe(value)}")
        items = tuple(value)
    else:
        items = (value, value)
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {_describe(value)}")
        if v < minimum:
            raise ValueError(f"{op}: {name} must be >= {minimum}, got {_describe(value)}")
    return int(items[0]), int(items[1])


def _describe(value: Any) -> str:
    """``value`` for an error message: its repr, cut short, with its type when that helps."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, np.ndarray):
        text = f"an array of shape {value.shape} and dtype {value.dtype}"
    elif type(value).__name__ not in text and not isinstance(value, (int, float, str, tuple, list)):
        text += f" ({type(value).__name__})"
    return text


def memory_limit() -> int:
    """Bytes one array may take: the least of the memory this machine has available now
    (Linux's MemAvailable, else its physical memory, else 2**62) and the address space
    this process may still map (``ulimit -v`` / ``RLIMIT_AS``, ``ulimit -d`` /
    ``RLIMIT_DATA``), which a grader or a batch system may set far below the machine's.

    NumPy asked for more either raises ``MemoryError`` or, worse, succeeds lazily and
    the process (or a neighbour) is killed later; a request above this is refused up
    front instead."""
    room = address_space_left()
    return available_memory() if room is None else min(available_memory(), room)


def available_memory() -> int:
    """The machine's memory available now: MemAvailable, else physical memory, else 2**62."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 1 << 62


def address_space_left() -> int | None:
    """Bytes the process may still map under its address-space and data limits (the
    soft limit minus what is mapped now, /proc/self/status), or None with no limit."""
    rooms = _limits_left()
    return min(rooms)[0] if rooms else None


def _limits_left() -> list[tuple[int, str]]:
    """(bytes left, the ulimit option) for each limit that is set."""
    try:
        import resource
    except ImportError:  # Windows: no such limits
        return []
    status = _status_kib()
    rooms = []
    for limit, field, option in ((resource.RLIMIT_AS, "VmSize", "-v"),
                                 (resource.RLIMIT_DATA, "VmData", "-d")):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            rooms.append((max(soft - status.get(field, 0) * 1024, 0), option))
    return rooms


def _status_kib() -> dict[str, int]:
    """The kB fields of /proc/self/status (empty where there is none)."""
    fields = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    fields[name] = int(parts[0])
    except (OSError, ValueError):
        pass
    return fields


def describe_limit(limit: int) -> str:
    """``limit`` for a message, naming the address-space limit when that is what binds."""
    rooms = _limits_left()
    if rooms and min(rooms)[0] <= limit:
        kind = {"-v": "address-space", "-d": "data-size"}[min(rooms)[1]]
        return f"the {limit / 2**30:.3g} GiB that the {kind} limit (ulimit {min(rooms)[1]}) leaves"
    return f"the {limit / 2**30:.3g} GiB of memory available"


SMALL_BYTES = 1 << 26  # 64 MiB


def check_fits(op: str, what: str, shape: tuple[int, ...], itemsize: int, because: str = "",
               copies: int = 1) -> None:
    """``ValueError`` naming ``op`` if ``copies`` arrays of ``shape`` could not fit in memory."""
    nbytes = itemsize
    for n in shape:
        nbytes *= n
    # Reading /proc/meminfo costs tens of microseconds, a measurable share of a small
    # convolution; an array under SMALL_BYTES is never refused, so it is not read then.
    if nbytes * copies > SMALL_BYTES and nbytes * copies > (limit := memory_limit()):
        needed = (f"{copies} x " if copies > 1 else "") + f"{nbytes / 2**30:.3g} GiB"
        raise ValueError(
            f"{op}: {what} of shape {tuple(shape)}{because} would need {needed}, "
            f"more than {describe_limit(limit)}"
        )
