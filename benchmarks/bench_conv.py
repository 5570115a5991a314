"""Time minibam's conv2d forward + backward (dx, dW, db) beside PyTorch's, on the same inputs.

    python benchmarks/bench_conv.py [--repeats 15] [--threads N]

Both libraries run in this one process, interleaved call by call so that both see the
same machine load, with the same number of threads: PyTorch is set to the thread count
of NumPy's BLAS (reported, together with the BLAS core OpenBLAS picked, which
OPENBLAS_CORETYPE can override). Each timing is the median over ``--repeats`` runs;
the ratio is the median of minibam / torch over neighbouring pairs of runs (lower is
better; the target is <= 2).

The cases are the convolutions of BAM's spatial gate at a 56x56 stage: the 3x3
dilation-4 conv (C/r -> C/r) and the 1x1 reduction conv (C -> C/r).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    import minibam as mb
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import minibam as mb
from minibam import functional as F

CASES = [
    # name, x shape, weight shape, conv keyword arguments
    ("3x3 d4 p4 16->16", (4, 16, 56, 56), (16, 16, 3, 3), {"padding": 4, "dilation": 4}),
    ("1x1 256->16", (4, 256, 56, 56), (16, 256, 1, 1), {}),
]


def blas_info() -> tuple[int | None, str]:
    """(threads, description) of NumPy's BLAS, via threadpoolctl if present, else OpenBLAS."""
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                desc = f"{pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')}"
                return int(pool["num_threads"]), desc
    except ImportError:
        pass
    libdir = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for so in glob.glob(str(libdir / "*openblas*")):
        lib = ctypes.CDLL(so)
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "")):
            try:
                threads = getattr(lib, f"{prefix}_get_num_threads{suffix}")
                core = getattr(lib, f"{prefix}_get_corename{suffix}")
            except AttributeError:
                continue
            core.restype = ctypes.c_char_p
            return int(threads()), f"OpenBLAS, core {core().decode()}"
    return None, "unknown BLAS"


def minibam_step(x: np.ndarray, w: np.ndarray, b: np.ndarray, g: np.ndarray, kw: dict):
    xt = mb.Tensor._wrap(x, requires_grad=True)
    wt = mb.Tensor._wrap(w, requires_grad=True)
    bt = mb.Tensor._wrap(b, requires_grad=True)
    F.conv2d(xt, wt, bt, **kw).backward(g)
    return xt.grad, wt.grad, bt.grad


def torch_step(torch, x, w, b, g, kw: dict):
    x.grad = w.grad = b.grad = None
    torch.nn.functional.conv2d(x, w, b, **kw).backward(g)
    return x.grad, w.grad, b.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="default: NumPy BLAS threads")
    args = parser.parse_args()

    import torch

    blas_threads, blas_desc = blas_info()
    threads = args.threads or blas_threads or os.cpu_count() or 1
    if args.threads and blas_threads and args.threads != blas_threads:
        print(f"warning: NumPy's BLAS uses {blas_threads} threads, torch is set to {threads}")
    torch.set_num_threads(threads)
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(f"numpy {np.__version__} ({blas_desc}, {blas_threads} threads"
          f"{', OPENBLAS_CORETYPE=' + coretype if coretype else ''}); "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"median of {args.repeats} repeats, forward + backward (dx, dW, db)\n")
    print(f"{'case':<18} {'dtype':<8} {'minibam ms':>11} {'torch ms':>9} {'ratio':>6}")

    rng = np.random.default_rng(0)
    for name, xs, ws, kw in CASES:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            b = rng.standard_normal(ws[0]).astype(dtype)
            with torch.no_grad():
                out_shape = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), **kw).shape
            g = rng.standard_normal(tuple(out_shape)).astype(dtype)
            tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
            tg = torch.from_numpy(g)

            # Sanity: the two agree, so we time the same computation.
            pairs = zip(minibam_step(x, w, b, g, kw), torch_step(torch, tx, tw, tb, tg, kw), strict=True)
            for ours, theirs in pairs:
                scale = float(np.abs(theirs.numpy()).max()) or 1.0
                assert np.abs(ours - theirs.numpy()).max() <= 1e-3 * scale, name

            times: dict[str, list[float]] = {"minibam": [], "torch": []}
            for _ in range(args.repeats):
                start = time.perf_counter()
                minibam_step(x, w, b, g, kw)
                times["minibam"].append(time.perf_counter() - start)
                start = time.perf_counter()
                torch_step(torch, tx, tw, tb, tg, kw)
                times["torch"].append(time.perf_counter() - start)
            ours_ms = 1e3 * statistics.median(times["minibam"])
            theirs_ms = 1e3 * statistics.median(times["torch"])
            # Ratio of neighbours in time, so a burst of load elsewhere hits both sides.
            ratio = statistics.median(a / b for a, b in zip(*times.values(), strict=True))
            print(f"{name:<18} {np.dtype(dtype).name:<8} {ours_ms:11.2f} {theirs_ms:9.2f} "
                  f"{ratio:6.2f}")


if __name__ == "__main__":
    main()
