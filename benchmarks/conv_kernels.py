"""BAM's dilated 3x3 convolutions, kernel by kernel: products and copies counted, CPU time
and GFLOP/s measured, against this machine's GEMM peak.

    python benchmarks/conv_kernels.py [--threads 1] [--dtype float32] [--repeat 15]

For each of BAM's dilated convolutions (r = 16 at the ResNet-50 placements, and the
CIFAR-sized one) it prints

- the products of the forward with im2col, with the regions that skip the padding
  (`minibam.backends.conv_regions.products`: the useful ones) and with Winograd
  F(2x2, 3x3) on the sub-grids (`minibam.backends.conv_winograd.products`: 16 matrix
  products per tile set, on the map padded to whole tiles of every sub-grid);
- the CPU time of forward + backward (dx, dW, db) through ``F.conv2d`` on each path: im2col
  (or the flat layout where that is taken), the regions forced, and Winograd (its kernel
  put in place of `FastConv2d` for the call: it is not one of minibam's paths); the best
  and the median of ``--repeat`` interleaved calls; which path minibam takes by default;
  and Winograd's 48 matrix products alone (forward, dW, dx on ready-made operands), the
  time it could reach if its transforms cost nothing;
- the GFLOP/s of each path, counting the **useful** products only (3 x 2 x the regions'
  forward products: forward, dW and dx each multiply every non-zero pair once), and of
  the default path against the peak;
- the peak: the GFLOP/s of one large square matrix product in the same process, the
  most this machine's BLAS reaches with these threads.

CPU time, not wall time: on a shared machine it is the less disturbed of the two (it still
rises with load: caches and memory bandwidth are shared too). It prints the load average.
``--wall`` times wall-clock instead (for an A/B on a quiet machine).
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


def best_cpu_time(calls: list, repeat: int, clock=time.process_time) -> list[float]:
    """Best CPU time of each call, the calls interleaved so that each sees the same load."""
    return [best for best, _ in cpu_times(calls, repeat, clock)]


def cpu_times(calls: list, repeat: int, clock=time.process_time) -> list[tuple[float, float]]:
    """(best, median) CPU time of each call, the calls interleaved so that each sees the
    same load."""
    times: list[list[float]] = [[] for _ in calls]
    for call in calls:
        call()
    for _ in range(repeat):
        for i, call in enumerate(calls):
            start = clock()
            call()
            times[i].append(clock() - start)
    return [(min(t), float(np.median(t))) for t in times]


def winograd_twin() -> type:
    """`Conv2d` run by `conv_winograd`, the same saved-state conventions as `FastConv2d`
    (V kept for dW when freed memory is kept, else x and V rebuilt in backward)."""
    from minibam.backends import allocator, conv_winograd
    from minibam.ops.conv import Conv2d

    class WinogradConv2d(Conv2d):
        @staticmethod
        def forward(ctx, x, weight, bias, g):  # noqa: ANN001, ANN205 - Conv2d's signature
            ctx.x_shape, ctx.geometry = x.shape, g
            ctx.kept = ctx.needs_input_grad[1] and allocator.freed_memory_kept()
            y, v = conv_winograd.winograd_forward(x, weight, g, keep=ctx.kept)
            if bias is not None:
                y += bias[:, None, None]
            ctx.save_for_backward(v if ctx.kept else x, weight)
            return y

        @staticmethod
        def backward(ctx, grad):  # noqa: ANN001, ANN205
            saved, weight = ctx.saved
            need_x, need_w, need_b = ctx.needs_input_grad
            gx, gw = conv_winograd.winograd_backward(grad, saved, weight, ctx.x_shape, ctx.geometry,
                                                     ctx.kept, need_x, need_w)
            return gx, gw, grad.sum(axis=(0, 2, 3)) if need_b else None

    return WinogradConv2d


def winograd_products_only(x: np.ndarray, weight: np.ndarray, g) -> callable:  # noqa: ANN001
    """Winograd's 48 matrix products of forward + backward, on operands made beforehand."""
    from minibam.backends import conv_winograd

    n, c, h, w = x.shape
    p = conv_winograd.Tiling(h, w, g).tiles(n)
    rng = np.random.default_rng(1)
    u = conv_winograd.weight_transform(weight)
    v, dm = (rng.standard_normal(s).astype(x.dtype) for s in ((16, c, p), (16, weight.shape[0], p)))
    m, dv = np.empty(dm.shape, x.dtype), np.empty(v.shape, x.dtype)

    def run() -> None:
        np.matmul(u, v, out=m)
        np.matmul(dm, v.transpose(0, 2, 1))
        np.matmul(u.transpose(0, 2, 1), dm, out=dv)

    return run


def peak_gflops(dtype: np.dtype, repeat: int, clock=time.process_time) -> float:
    a = np.random.default_rng(0).standard_normal((1536, 1536)).astype(dtype)
    (t,) = best_cpu_time([lambda: a @ a], max(3, repeat // 3), clock)
    return 2 * 1536**3 / t / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--wall", action="store_true", help="wall-clock time instead of CPU time")
    args = parser.parse_args()
    set_blas_threads(args.threads)
    os.environ.setdefault("MINIBAM_NUM_THREADS", str(args.threads))

    import minibam as mb
    from minibam import functional as F
    from minibam.backends import conv_regions, conv_winograd, fast
    from minibam.backends.conv import _path
    from minibam.ops.conv import Conv2d, geometry

    dtype = np.dtype(args.dtype)
    clock = time.perf_counter if args.wall else time.process_time
    clock_name = "wall" if args.wall else "CPU"
    peak = peak_gflops(dtype, args.repeat, clock)
    print(f"{blas_description()}, {args.threads} thread(s), {dtype.name}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"peak: one 1536^3 matrix product, {peak:.0f} GFLOP/s ({clock_name} time)\n")
    print("Products of the forward (dW and dx take as many on each path):")
    header = (f"{'convolution':36} {'im2col':>13} {'regions (useful)':>17} {'skipped':>8} "
              f"{'Winograd':>13} {'/ useful':>9}")
    print(header)
    print("-" * len(header))
    for label, (n, c, h, w) in CASES.items():
        g = geometry("conv2d", h, w, 3, 1, 4, 4)
        full, kept = conv_regions.products((n, c, h, w), c, g)
        wino = conv_winograd.products((n, c, h, w), c, g)
        print(f"{label:36} {full:13,d} {kept:17,d} {1 - kept / full:8.0%} {wino:13,d} {wino / kept:9.2f}")
    print(f"\nForward + backward, {clock_name} ms, best (median) of {args.repeat} interleaved calls; "
          "GFLOP/s counting useful products:")
    header = (f"{'convolution':36} {'im2col/flat':>15} {'regions':>15} {'Winograd':>15} "
              f"{'W. GEMMs':>9} {'default':>8} {'GFLOP/s i/r/W':>15} {'% peak':>7}")
    print(header)
    print("-" * len(header))
    winograd = winograd_twin()
    for label, (n, c, h, w) in CASES.items():
        g = geometry("conv2d", h, w, 3, 1, 4, 4)
        _, kept = conv_regions.products((n, c, h, w), c, g)
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

        def by_winograd(step=step) -> None:
            previous = fast.implementation(Conv2d)
            fast._chosen[Conv2d] = winograd
            try:
                step()
            finally:
                fast._chosen[Conv2d] = previous

        calls = [lambda: forced(False), lambda: forced(True), by_winograd,
                 winograd_products_only(arrays[0], arrays[1], g)]
        times = cpu_times(calls, args.repeat, clock)
        path = _path(c, h, w, g, dtype.itemsize)
        path = "im2col" if path == "columns" else path
        rates = [3 * 2 * kept / best / 1e9 for best, _ in times[:3]]
        default = rates[1] if path == "regions" else rates[0]
        cells = [f"{best * 1e3:6.2f} ({median * 1e3:6.2f})" for best, median in times[:3]]
        rate_cells = "/".join(f"{r:.0f}" for r in rates)
        print(f"{label:36} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} {times[3][0] * 1e3:9.2f} "
              f"{path:>8} {rate_cells:>15} {default / peak:7.0%}")


if __name__ == "__main__":
    main()
