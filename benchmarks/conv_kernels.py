"""BAM's dilated 3x3 convolutions, kernel by kernel: products and copies counted, CPU time
and GFLOP/s measured, against this machine's GEMM peak.

    python benchmarks/conv_kernels.py [--threads 1] [--dtype float32] [--repeat 15]

For each of BAM's dilated convolutions (r = 16 at the ResNet-50 placements, and the
CIFAR-sized one) it prints

- the products of the forward with im2col and with the regions that skip the padding
  (`minibam.backends.conv_regions.products`), and the values each copies into columns;
- the CPU time of forward + backward (dx, dW, db) without the regions (im2col, or the
  flat layout where that is taken) and with the regions forced, best of ``--repeat``
  interleaved calls, which path minibam takes by default, and the GFLOP/s of that path,
  counting the **useful** products only (3 x 2 x the regions' forward products:
  forward, dW and dx each multiply every non-zero pair once);
- the peak: the GFLOP/s of one large square matrix product in the same process, the
  most this machine's BLAS reaches with these threads.

CPU time, not wall time: on a shared machine it is the less disturbed of the two (it still
rises with load: caches and memory bandwidth are shared too). It prints the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minibam.bench.threads import blas_description, set_blas_threads  # noqa: E402

CASES = {  # (N, C, H, W), dilation 4, padding 4, C -> C
    "CIFAR (8,64,32,32): 4->4 at 32x32": (8, 4, 32, 32),
    "(4,256,56,56): 16->16 at 56x56": (4, 16, 56, 56),
    "(8,512,28,28): 32->32 at 28x28": (8, 32, 28, 28),
    "(16,1024,14,14): 64->64 at 14x14": (16, 64, 14, 14),
}


def best_cpu_time(calls: list, repeat: int) -> list[float]:
    """Best CPU time of each call, the calls interleaved so that each sees the same load."""
    best = [float("inf")] * len(calls)
    for call in calls:
        call()
    for _ in range(repeat):
        for i, call in enumerate(calls):
            start = time.process_time()
            call()
            best[i] = min(best[i], time.process_time() - start)
    return best


def peak_gflops(dtype: np.dtype, repeat: int) -> float:
    a = np.random.default_rng(0).standard_normal((1536, 1536)).astype(dtype)
    (t,) = best_cpu_time([lambda: a @ a], max(3, repeat // 3))
    return 2 * 1536**3 / t / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    set_blas_threads(args.threads)
    os.environ.setdefault("MINIBAM_NUM_THREADS", str(args.threads))

    import minibam as mb
    from minibam import functional as F
    from minibam.backends import conv_regions
    from minibam.backends.conv import _path
    from minibam.ops.conv import geometry

    dtype = np.dtype(args.dtype)
    peak = peak_gflops(dtype, args.repeat)
    print(f"{blas_description()}, {args.threads} thread(s), {dtype.name}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"peak: one 1536^3 matrix product, {peak:.0f} GFLOP/s (CPU time)\n")
    header = (f"{'convolution':36} {'products im2col':>16} {'regions':>13} {'skipped':>8} "
              f"{'im2col/flat ms':>14} {'regions ms':>11} {'default':>8} {'GFLOP/s':>8} {'% peak':>7}")
    print(header)
    print("-" * len(header))
    for label, (n, c, h, w) in CASES.items():
        g = geometry("conv2d", h, w, 3, 1, 4, 4)
        full, kept = conv_regions.products((n, c, h, w), c, g)
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(s).astype(dtype) for s in ((n, c, h, w), (c, c, 3, 3), (c,))]
        dy = rng.standard_normal((n, c, h, w)).astype(dtype)

        def step(arrays=arrays, dy=dy) -> None:
            tensors = [mb.Tensor(a, requires_grad=True) for a in arrays]
            F.conv2d(*tensors, padding=4, dilation=4).backward(dy)

        names = ("REGIONS_MIN_SKIPPED", "REGIONS_MIN_CHANNELS", "REGIONS_OVER_FLAT")

        def forced(regions: bool, step=step, names=names) -> None:
            saved = [getattr(conv_regions, name) for name in names]
            on, off = ({4: 0.0, 8: 0.0}, 1, 0.0), ({4: 2.0, 8: 2.0}, 1, 2.0)
            for name, value in zip(names, on if regions else off, strict=True):
                setattr(conv_regions, name, value)
            try:
                step()
            finally:
                for name, value in zip(names, saved, strict=True):
                    setattr(conv_regions, name, value)

        t_plain, t_regions = best_cpu_time([lambda: forced(False), lambda: forced(True)], args.repeat)
        path = _path(c, h, w, g, dtype.itemsize)
        path = "im2col" if path == "columns" else path
        gflops = 3 * 2 * kept / (t_regions if path == "regions" else t_plain) / 1e9
        print(f"{label:36} {full:16,d} {kept:13,d} {1 - kept / full:8.0%} {t_plain * 1e3:14.2f} "
              f"{t_regions * 1e3:11.2f} {path:>8} {gflops:8.0f} {gflops / peak:7.0%}")


if __name__ == "__main__":
    main()
