"""Keep freed memory for reuse instead of handing it back to the system after every step.

Why: a training step allocates its activations and gradients afresh and frees them at
the end. With glibc's default settings large arrays are mapped fresh from the kernel
each time, or the heap is trimmed after every step and grown again in the next, so
every page of every large array costs a page fault (the kernel maps and zeroes it).
On the 2-core machine of docs/performance.md a BAMNet training step took about 10,000
page faults, which cost about half of its time (91 ms with them, 44 ms without); BAM
at (8, 512, 28, 28) float64 went from 94 ms to 72 ms.

What: at ``import minibam``, on Linux with glibc, two ``mallopt`` settings of the
process's allocator (see ``man mallopt``):

- ``M_MMAP_THRESHOLD`` = 32 MiB: blocks up to 32 MiB come from the heap, where a freed
  block is reused, instead of a fresh mapping each;
- ``M_TRIM_THRESHOLD`` = 256 MiB: up to 256 MiB of free memory at the top of the heap
  stays mapped for the next step instead of being returned at once.

The cost: the process's resident memory stays near its peak between steps (at most
256 MiB above what is in use). PyTorch's documentation suggests the same trade for
CPU training with jemalloc or tcmalloc.

It is left alone when ``MINIBAM_MALLOC=system`` is set, when the user set glibc's own
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc`` tunable
(their choice wins), and on other C libraries and systems.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # from <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 << 20

TUNED = False  # whether keep_freed_memory changed the allocator in this process


def _user_chose() -> bool:
    env = os.environ
    return (
        env.get("MINIBAM_MALLOC", "").strip().lower() == "system"
        or "MALLOC_MMAP_THRESHOLD_" in env
        or "MALLOC_TRIM_THRESHOLD_" in env
        or "glibc.malloc" in env.get("GLIBC_TUNABLES", "")
    )


def keep_freed_memory() -> bool:
    """Apply the two settings above; return whether they were applied."""
    global TUNED
    if TUNED:
        return True
    if _user_chose() or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; fixing the mmap threshold also stops glibc from
    # moving it (and the trim threshold) by itself.
    TUNED = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return TUNED


def describe() -> str:
    """One line for benchmark headers: which allocator settings minibam's processes run with."""
    if TUNED:
        return ("allocator: minibam keeps freed memory (glibc M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD "
                "256 MiB; minibam/_malloc.py); a side without that code, such as PyTorch, runs with glibc's defaults")
    if _user_chose():
        return "allocator: glibc settings from the environment (MINIBAM_MALLOC / MALLOC_* / GLIBC_TUNABLES), both sides"
    return "allocator: the system's defaults, both sides"
