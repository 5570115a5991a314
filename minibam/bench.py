"""Time BAM forward + backward (training mode) in minibam, beside PyTorch when installed.

Used by ``minibam bench`` and ``benchmarks/bench_bam.py``. Both libraries run in one
process on the same weights and inputs, interleaved call by call so that they see the
same machine load, and PyTorch gets the thread count of NumPy's BLAS. Each time is
the median over the repeats, after one warm-up call each; the ratio is
minibam / PyTorch (lower is better).
"""

from __future__ import annotations

import ctypes
import glob
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minibam.checks.bam import random_bam
from minibam.checks.compare import relative_error
from minibam.tensor import Tensor

# Where BAM sits in ResNet-50 (after stages 1-3, at the paper's batch sizes), and a
# CIFAR-sized placement.
RESNET50_SHAPES = [(4, 256, 56, 56), (8, 512, 28, 28), (16, 1024, 14, 14), (8, 64, 32, 32)]
QUICK_SHAPES = [(2, 32, 8, 8), (4, 64, 6, 6)]


@dataclass
class Timing:
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    minibam_ms: float
    torch_ms: float | None = None
    max_rel_diff: float | None = None  # of y and dx, minibam vs PyTorch

    @property
    def ratio(self) -> float | None:
        return None if self.torch_ms is None else self.minibam_ms / self.torch_ms


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


def blas_threads(threads: int | None = None) -> int | None:
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


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def time_case(shape: tuple[int, int, int, int], dtype: Any, repeat: int, torch: Any = None,
              variant: str = "paper", reduction_ratio: int = 16, seed: int = 0) -> Timing:
    """Median wall time of one forward + backward of BAM at ``shape``."""
    dtype = np.dtype(dtype)
    n, c, h, w = shape
    bam = random_bam(c, min(reduction_ratio, c), variant=variant, seed=seed, dtype=dtype)
    rng = np.random.default_rng([seed, 3])
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)

    def minibam_step() -> tuple[np.ndarray, np.ndarray]:
        bam.zero_grad()
        xt = Tensor(x, requires_grad=True)
        y = bam(xt)
        y.backward(dy)
        return y.data, xt.grad

    steps: list[Callable[[], Any]] = [minibam_step]
    if torch is not None:
        from minibam.torch_oracle import bam_like

        model = bam_like(bam)
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)

        def torch_step() -> tuple[np.ndarray, np.ndarray]:
            model.zero_grad()
            xt = tx.clone().requires_grad_(True)
            y = model(xt)
            y.backward(tdy)
            return y.detach().numpy(), xt.grad.numpy()

        steps.append(torch_step)
    first = [step() for step in steps]  # warm-up, and the results to compare
    samples: list[list[float]] = [[] for _ in steps]
    for _ in range(repeat):
        for step, times in zip(steps, samples, strict=True):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    timing = Timing(shape, dtype, _median_ms(samples[0]))
    if torch is not None:
        timing.torch_ms = _median_ms(samples[1])
        timing.max_rel_diff = max(relative_error(a, b) for a, b in zip(first[0], first[1], strict=True))
    return timing
