"""Independent blocks of NumPy work on a small pool of threads.

NumPy releases the GIL inside a ufunc (``np.exp``, ``np.multiply``, ...) once its arrays
are more than a few thousand elements, so two threads that each run ufuncs on their own
cache-sized block really do compute at the same time. PyTorch runs its elementwise
kernels on all cores; this lets minibam's largest elementwise ops (BAM's fused last step)
do the same with plain NumPy. See docs/performance.md, "Threads over cache-sized blocks".

The pool is made on first use, never at import.

``THREADS`` comes from ``MINIBAM_NUM_THREADS`` (default: the number of cores); 1 turns
the pool off and everything runs in the calling thread, in order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def _threads_from_env() -> int:
    try:
        return max(1, int(os.environ.get("MINIBAM_NUM_THREADS", "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


THREADS = _threads_from_env()
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_lock = threading.Lock()
_PREFIX = "minibam-pool"


def _executor() -> ThreadPoolExecutor:
    """The shared pool, made on first use (and anew in a forked child, whose copy of
    the parent's threads does not exist)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=THREADS - 1, thread_name_prefix=_PREFIX)
            _pool_pid = os.getpid()
        return _pool


def map_chunks(work: Callable[[Sequence[T]], Any], items: Sequence[T]) -> list[Any]:
    """``[work(chunk) for chunk in chunks]``: ``items`` cut into up to ``THREADS`` runs of
    consecutive items, one run per thread (the calling thread does the first).

    One task per thread rather than per item keeps the pool's overhead (tens of
    microseconds a task) negligible. The caller's floating-point error settings
    (``np.errstate``) hold in every thread. ``work`` must not write where another run
    writes: each run gets its own results back in the returned list, in order.
    """
    runs = min(THREADS, len(items))
    # On one of the pool's own threads (a map_chunks inside a map_chunks), waiting for
    # the pool could wait for this very thread: run in place instead.
    if runs <= 1 or threading.current_thread().name.startswith(_PREFIX):
        return [work(items)]
    bounds = [len(items) * k // runs for k in range(runs + 1)]
    chunks = [items[bounds[k]:bounds[k + 1]] for k in range(runs)]
    settings = np.geterr()

    def in_thread(chunk: Sequence[T]) -> Any:
        with np.errstate(**settings):
            return work(chunk)

    futures = [_executor().submit(in_thread, chunk) for chunk in chunks[1:]]
    first = work(chunks[0])
    return [first, *(f.result() for f in futures)]


def blocks(n: int, c: int, plane: int, size: int) -> list[tuple[int, slice]]:
    """``(row, slice of axis 1)`` blocks of about ``size`` values each, covering an array
    viewed as (n, c, plane) once: independent pieces for `map_chunks`, each small enough
    for its temporaries to stay in the CPU cache."""
    step = max(1, size // max(plane, 1))
    return [(i, slice(start, min(start + step, c))) for i in range(n) for start in range(0, c, step)]
