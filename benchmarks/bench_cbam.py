"""Time CBAM forward + backward (training mode) in minibam and in PyTorch, each library in
its own process.

    python benchmarks/bench_cbam.py [--shapes N,C,H,W ...] [--dtype float32|float64]
                                    [--repeat R] [--threads T] [--pool-types avg,max]

Each library runs in a fresh Python process of its own (so neither pays for the other's
imports, allocator or thread pools), on the same weights (``minibam.checks.random_cbam``
with one seed; PyTorch loads its ``state_dict()``) and the same inputs. The processes
run one after the other, per shape, alternating which goes first. Times are medians
over the repeats after one warm-up; the ratio is minibam / PyTorch (lower is better).
The 1-minute load average is printed, because on a shared machine it moves the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ResNet-50's stage outputs at the paper's batch sizes, and a CIFAR-sized map.
DEFAULT_SHAPES = ["4,256,56,56", "8,512,28,28", "16,1024,14,14", "8,64,32,32"]


def child(library: str, shape: tuple[int, ...], dtype: str, repeat: int, threads: int,
          pool_types: tuple[str, ...]) -> dict:
    """Runs in its own process: time ``repeat`` forward + backward passes of one library."""
    import numpy as np

    from minibam.checks import random_cbam
    from minibam.tensor import Tensor

    n, c, h, w = shape
    cbam = random_cbam(c, min(16, c), pool_types, seed=0, dtype=np.dtype(dtype))
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    if library == "minibam":
        from minibam.bench import blas_threads

        blas_threads(threads)

        def step() -> np.ndarray:
            cbam.zero_grad()
            xt = Tensor(x, requires_grad=True)
            cbam(xt).backward(dy)
            return xt.grad
    else:
        import torch

        from minibam.torch_oracle import cbam_like

        torch.set_num_threads(threads)
        model = cbam_like(cbam)
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)

        def step() -> np.ndarray:
            model.zero_grad()
            xt = tx.clone().requires_grad_(True)
            model(xt).backward(tdy)
            return xt.grad.numpy()

    dx = step()  # warm-up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return {"ms": 1e3 * statistics.median(samples), "dx_checksum": float(np.abs(dx).sum())}


def run_child(library: str, args: argparse.Namespace, shape: str) -> dict:
    command = [sys.executable, __file__, "--child", library, "--shapes", shape, "--dtype", args.dtype,
               "--repeat", str(args.repeat), "--threads", str(args.threads),
               "--pool-types", ",".join(args.pool_types)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, metavar="N,C,H,W")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pool-types", type=lambda s: tuple(s.split(",")), default=("avg", "max"))
    parser.add_argument("--child", choices=("minibam", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        shape = tuple(int(v) for v in args.shapes[0].split(","))
        print(json.dumps(child(args.child, shape, args.dtype, args.repeat, args.threads,
                               args.pool_types)))
        return 0
    print(f"CBAM forward + backward, training mode, pool_types={','.join(args.pool_types)}, "
          f"r=16, {args.dtype}, {args.threads} threads each; median of {args.repeat} runs after a "
          f"warm-up; each library in its own process")
    print(f"\n{'shape (N,C,H,W)':<18} {'minibam ms':>11} {'torch ms':>9} {'ratio':>6} {'load':>5}")
    print("-" * 53)
    for i, shape in enumerate(args.shapes):
        order = ("minibam", "torch") if i % 2 == 0 else ("torch", "minibam")
        results = {library: run_child(library, args, shape) for library in order}
        ours, theirs = results["minibam"], results["torch"]
        agree = abs(ours["dx_checksum"] - theirs["dx_checksum"]) <= 1e-3 * abs(theirs["dx_checksum"])
        print(f"{shape:<18} {ours['ms']:>11.1f} {theirs['ms']:>9.1f} {ours['ms'] / theirs['ms']:>6.2f} "
              f"{os.getloadavg()[0]:>5.1f}{'' if agree else '  (dx differs!)'}")
    print("\nratio = minibam / PyTorch (lower is better); load = 1-minute load average after the pair")
    return 0


if __name__ == "__main__":
    sys.exit(main())
