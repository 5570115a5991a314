"""Reading and setting the thread count of NumPy's BLAS (OpenBLAS), for the benchmarks."""

from __future__ import annotations

import ctypes
import glob
from pathlib import Path
from typing import Any

import numpy as np


def _openblas() -> tuple[Any, str, str] | None:
    """NumPy's bundled OpenBLAS as (library, symbol prefix, symbol suffix), if found."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in glob.glob(str(libs / "*openblas*")):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            if hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                return lib, prefix, suffix
    return None


def set_blas_threads(threads: int | None = None) -> int | None:
    """Threads of NumPy's BLAS, after setting them to ``threads`` if given (threadpoolctl
    when installed, else NumPy's own OpenBLAS); None when they cannot be read."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        if threads is not None:
            threadpool_limits(limits=threads, user_api="blas")
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                return int(pool["num_threads"])
        return None
    except ImportError:
        pass
    found = _openblas()
    if found is None:
        return None
    lib, prefix, suffix = found
    if threads is not None:
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(int(threads))
    return int(getattr(lib, f"{prefix}_get_num_threads{suffix}")())


def blas_description() -> str:
    """NumPy's BLAS and the kernel it picked, e.g. "openblas 0.3.31 SkylakeX"."""
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                return f"{pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')}"
    except ImportError:
        pass
    found = _openblas()
    if found is None:
        return "unknown BLAS"
    lib, prefix, suffix = found
    core = getattr(lib, f"{prefix}_get_corename{suffix}", None)
    if core is None:
        return "OpenBLAS"
    core.restype = ctypes.c_char_p
    return f"OpenBLAS {core().decode()}"
