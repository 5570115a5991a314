"""Independent blocks of NumPy work on a small pool of threads.

NumPy releases the GIL inside a ufunc (``np.exp``, ``np.multiply``, ...) once its arrays
are more than a few thousand elements, so two threads that each run ufuncs on their own
cache-sized block really do compute at the same time. PyTorch runs its elementwise
kernels on all cores; this lets minibam's largest elementwise ops (BAM's fused last step)
do the same with plain NumPy. See docs/performance.md, "Threads over cache-sized blocks".

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


def _executor() -> ThreadPoolExecutor:
    """The shared pool, made on first use (and anew in a forked child, whose copy of
    the parent's threads does not exist)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=THREADS - 1, thread_name_prefix="minibam")
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
    if runs <= 1:
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


# Below this many values a split costs more than it saves.
SPLIT_MIN_ELEMENTS = 1 << 18


def add_into(total: np.ndarray, *terms: np.ndarray) -> None:
    """``total += term`` for each of ``terms`` in order (each broadcastable to ``total``):
    the engine's sum of the gradients that reach one tensor.

    When ``total`` is large, the work is split along its first axis between the threads,
    and each thread walks its rows in cache-sized blocks, adding every term to a block
    before moving on: ``total`` then goes through memory once however many terms there
    are, instead of once per term (each element still gets the terms in the same order,
    so the result is that of the plain loop, to the bit).
    """
    if total.size < SPLIT_MIN_ELEMENTS or total.ndim == 0 or total.shape[0] < 2 or any(
        t.shape != total.shape for t in terms
    ):
        for term in terms:
            total += term
        return
    per_row = total.size // total.shape[0]
    width = total.shape[1] if total.ndim > 1 else 1
    step = max(1, BLOCK_ELEMENTS // max(per_row // max(width, 1), 1)) if total.ndim > 1 else None

    def add(rows: Sequence[int]) -> None:
        if step is None:  # 1-D: blocks of rows
            for start in range(rows[0], rows[-1] + 1, BLOCK_ELEMENTS):
                part = slice(start, min(start + BLOCK_ELEMENTS, rows[-1] + 1))
                for term in terms:
                    total[part] += term[part]
            return
        for i in rows:
            for start in range(0, width, step):
                part = (i, slice(start, start + step))
                for term in terms:
                    total[part] += term[part]

    map_chunks(add, range(total.shape[0]))


# Values per block of add_into: a block of total stays in the CPU cache while each term
# is added to it (the same size as BAM's combination uses, ops/attention.py).
BLOCK_ELEMENTS = 1 << 16
