"""Opt-in: keep freed memory for reuse instead of handing it back to the system.

Why: a training step allocates its activations and gradients afresh and frees them at
the end. With glibc's default settings, large arrays are mapped fresh from the kernel
each time, or the heap is trimmed after every step and grown again in the next, so every
page of every large array costs a page fault (the kernel maps and zeroes it).
docs/performance.md ("Keep freed memory: no page faults") measures what that costs a BAM step.

What `keep_freed_memory` does, on Linux with glibc only: two ``mallopt`` settings of the
**whole process's** allocator (``man mallopt``), PyTorch's and every other library's
arrays included, for the rest of the process's life:

- ``M_MMAP_THRESHOLD`` = 32 MiB: blocks up to 32 MiB come from the heap, where a freed
  block is reused, instead of a fresh mapping each;
- ``M_TRIM_THRESHOLD`` = 256 MiB: free memory at the top of the heap stays mapped, up to
  256 MiB, instead of being returned at once.

What it costs: memory the program has freed stays resident. There is **no fixed bound**
on how much: a freed block below one still in use cannot be returned at all (heap
fragmentation), so a program that frees large arrays while keeping small ones allocated
after them can keep hundreds of MiB resident with little in use. ``python
benchmarks/allocator_cost.py`` measures both cases, with and without the setting
(tests/test_allocator.py holds the direction of each).

It is never called by ``import minibam``: ``minibam bench`` and ``minibam`` commands that
time or train call it; a notebook may call it knowingly. It does nothing (and returns
False) when ``MINIBAM_MALLOC=system`` is set, when any ``MALLOC_*`` environment variable
or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES`` is set (the user has chosen glibc's
behaviour: theirs wins), on other C libraries and on other systems.
"""

from __future__ import annotations

import os
import platform

M_TRIM_THRESHOLD = -1  # from <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 << 20

# The same two settings as environment variables, for a process that is not minibam
# (the other side of a benchmark): glibc reads them at start-up.
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}

_tuned = False  # whether keep_freed_memory changed the allocator of this process


def user_chose() -> bool:
    """Whether the environment already says how glibc's allocator should behave."""
    env = os.environ
    return (
        env.get("MINIBAM_MALLOC", "").strip().lower() == "system"
        or any(name.startswith("MALLOC_") for name in env)
        or "glibc.malloc" in env.get("GLIBC_TUNABLES", "")
    )


def keep_freed_memory() -> bool:
    """Apply the two settings above to this process; return whether they are in force."""
    global _tuned
    if _tuned:
        return True
    if user_chose() or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes  # only here: importing minibam loads no foreign code

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; fixing the mmap threshold also stops glibc from
    # moving it (and the trim threshold) by itself.
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned


def is_tuned() -> bool:
    """Whether `keep_freed_memory` changed this process's allocator."""
    return _tuned


def _env_bytes(name: str) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return 0


def freed_memory_kept() -> bool:
    """Whether glibc hands freed large blocks back for reuse in this process, so that a
    fresh temporary costs no page faults: `keep_freed_memory` is in force, or the
    environment set both thresholds at least as high (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``; how ``minibam bench --allocator kept`` starts every
    side). The fast kernels ask this to choose between keeping arrays for backward and
    rebuilding them into reused buffers (`scratch`)."""
    return _tuned or (_env_bytes("MALLOC_MMAP_THRESHOLD_") >= MMAP_THRESHOLD
                      and _env_bytes("MALLOC_TRIM_THRESHOLD_") >= TRIM_THRESHOLD)


def describe() -> str:
    """One line for benchmark headers: the allocator settings minibam's processes run with."""
    if _tuned:
        return ("allocator: freed memory kept for reuse (glibc M_MMAP_THRESHOLD 32 MiB, "
                "M_TRIM_THRESHOLD 256 MiB; minibam.backends.allocator)")
    if user_chose():
        return "allocator: glibc settings from the environment (MINIBAM_MALLOC / MALLOC_* / GLIBC_TUNABLES)"
    return "allocator: the system's defaults"
