"""minibam's own large temporaries, kept between steps instead of freed: fewer page faults
without changing the process's allocator.

Why: with glibc's default settings a large array (above its mmap threshold) is a fresh
mapping from the kernel, and each of its pages costs a page fault when first written
(the kernel maps and zeroes it). A training step makes the same temporaries in every
step, the same shapes each time; handing one back to the next step saves those faults
for minibam's own arrays only, and changes nothing for anyone else in the process
(`allocator.keep_freed_memory` is the process-wide alternative, opt-in).

The rule that keeps it safe: a kernel `take`s a buffer, uses it as a temporary, and
`give`s it back **before returning**. A buffer is never returned to the caller, never
kept in an op's saved context (a graph may be walked backward twice), never a view of
what the user holds. Kernels that run on several threads each take their own buffer
(the pool is locked).

Bound: at most ``LIMIT_BYTES`` held while idle (least recently given dropped first);
`release` empties the pool.

When the process keeps freed memory anyway (`allocator.keep_freed_memory` was called),
glibc already hands the same memory back, still warm in the cache: the pool then stands
aside (`take` is ``np.empty``, `give` keeps nothing), so the two never hold the same
temporaries twice over.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from minibam.backends import allocator

LIMIT_BYTES = 64 << 20
# Below this size an array comes from the heap anyway (glibc's default mmap threshold is
# 128 KiB): pooling it would save nothing.
MIN_BYTES = 64 << 10

_pool: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
_held = 0
_lock = threading.Lock()


def _after_fork() -> None:
    """A forked child starts with an empty pool and a fresh lock (the parent's lock may
    have been held by a thread that does not exist in the child)."""
    global _lock, _held
    _lock = threading.Lock()
    _pool.clear()
    _held = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _key(shape: tuple[int, ...], dtype: np.dtype) -> tuple:
    return tuple(int(v) for v in shape), np.dtype(dtype).str


def take(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``: a kept one if any."""
    global _held
    key = _key(shape, dtype)
    if allocator.freed_memory_kept():
        return np.empty(key[0], dtype=dtype)
    with _lock:
        kept = _pool.get(key)
        if kept:
            array = kept.pop()
            if not kept:  # no empty lists in the pool: eviction below pops from each
                del _pool[key]
            _held -= array.nbytes
            return array
    return np.empty(key[0], dtype=dtype)


def give(array: np.ndarray) -> None:
    """Keep ``array`` (from `take`, no longer used by anyone) for a later `take`."""
    global _held
    if (array.nbytes < MIN_BYTES or array.base is not None or not array.flags.c_contiguous
            or allocator.freed_memory_kept()):
        return
    key = _key(array.shape, array.dtype)
    with _lock:
        if any(kept is array for kept in _pool.get(key, ())):
            return  # given twice: keeping it twice would hand it to two takers
        _pool.setdefault(key, []).append(array)
        _pool.move_to_end(key)
        _held += array.nbytes
        while _held > LIMIT_BYTES and _pool:
            oldest, arrays = next(iter(_pool.items()))
            if arrays:
                _held -= arrays.pop(0).nbytes
            if not arrays:
                del _pool[oldest]


def copy_of(view: np.ndarray) -> np.ndarray:
    """A `take`n C-contiguous copy of ``view`` (to be given back like any taken buffer)."""
    out = take(view.shape, view.dtype)
    out[...] = view
    return out


def release() -> None:
    """Drop every kept buffer."""
    global _held
    with _lock:
        _pool.clear()
        _held = 0


def held_bytes() -> int:
    """Bytes held by the pool right now."""
    return _held
