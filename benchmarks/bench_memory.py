"""Peak extra memory of one BAM forward + backward (training mode): minibam vs PyTorch.

    python benchmarks/bench_memory.py [--shapes N,C,H,W ...] [--dtype float32|float64|both]

Each measurement runs in a fresh process that builds the module and the input and does
one warm-up step; then the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``),
one more step runs, and the peak (``VmHWM``) minus the resident size just before the
step is reported. The child runs with ``MALLOC_MMAP_THRESHOLD_=65536``, so every large
array is its own mapping, returned to the system when freed: resident memory then
follows the arrays that are alive, for both libraries alike, instead of what glibc
keeps cached. Same weights and inputs on both sides; ratio = minibam / PyTorch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ["4,256,56,56", "8,512,28,28", "16,1024,14,14", "8,64,32,32"]

CHILD = r"""
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from minibam.checks.bam import random_bam
from minibam.tensor import Tensor

def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

library, shape, dtype = {library!r}, {shape!r}, np.dtype({dtype!r})
n, c, h, w = shape
bam = random_bam(c, min(16, c), variant="paper", seed=0, dtype=dtype)
rng = np.random.default_rng([0, 3])
x = rng.standard_normal(shape).astype(dtype)
dy = rng.standard_normal(shape).astype(dtype)
if library == "torch":
    import torch
    from minibam.torch_oracle import bam_like
    model = bam_like(bam)
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
    def step():
        model.zero_grad()
        xt = tx.clone().requires_grad_(True)
        model(xt).backward(tdy)
        return xt.grad
else:
    def step():
        bam.zero_grad()
        xt = Tensor(x, requires_grad=True)
        bam(xt).backward(dy)
        return xt.grad
step()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
before = status_kib("VmRSS")
grad = step()
peak = status_kib("VmHWM")
print(json.dumps({{"extra_mib": (peak - before) / 1024}}))
"""


def measure(library: str, shape: tuple[int, ...], dtype: str) -> float:
    code = CHILD.format(root=str(ROOT), library=library, shape=shape, dtype=dtype)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=SHAPES)
    parser.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    args = parser.parse_args()
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    print("peak extra memory of one BAM forward + backward, training mode (MiB; RSS)")
    print(f"{'shape (N,C,H,W)':18s} {'dtype':8s} {'x (MiB)':>8s} {'minibam':>8s} {'torch':>8s} {'ratio':>6s}")
    for text in args.shapes:
        shape = tuple(int(v) for v in text.split(","))
        for dtype in dtypes:
            size = int(__import__("numpy").prod(shape)) * (4 if dtype == "float32" else 8) / 2**20
            ours, theirs = measure("minibam", shape, dtype), measure("torch", shape, dtype)
            ratio = ours / theirs if theirs > 0 else float("nan")
            print(f"{text:18s} {dtype:8s} {size:8.1f} {ours:8.1f} {theirs:8.1f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
