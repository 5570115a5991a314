"""Per-thread switches: whether ops record a graph.

Grad mode is kept per thread, as in PyTorch: ``no_grad()`` in one thread never changes
whether another thread records, and each ``with`` block restores exactly the mode its
own thread had on entry, however blocks in different threads interleave.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class _Mode(threading.local):
    # A threading.local subclass: every thread starts from this class attribute (True),
    # never from the mode another thread happened to have when it was started.
    grad_enabled = True


_mode = _Mode()


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside ``with no_grad():`` no op records a graph; results do not require grad.

    Affects the calling thread only.
    """
    previous = _mode.grad_enabled
    _mode.grad_enabled = False
    try:
        yield
    finally:
        _mode.grad_enabled = previous


def is_grad_enabled() -> bool:
    """Whether ops called from this thread record a graph."""
    return _mode.grad_enabled
