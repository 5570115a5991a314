"""Global switches: whether ops record a graph."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

grad_enabled = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside ``with no_grad():`` no op records a graph; results do not require grad."""
    global grad_enabled
    previous = grad_enabled
    grad_enabled = False
    try:
        yield
    finally:
        grad_enabled = previous


def is_grad_enabled() -> bool:
    return grad_enabled
