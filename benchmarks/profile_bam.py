"""Where BAM's time goes: CPU time per op, forward and backward, one thread.

    python benchmarks/profile_bam.py [--shape 4,256,56,56] [--dtype float32] [--repeat 10]
    python benchmarks/profile_bam.py --step [--shape 32,1,32,32]   # a BAMNet training step

Runs BAM forward + backward in training mode with every thread pool at one thread
(NumPy's BLAS and minibam's own), and charges the CPU time of each op's ``forward`` and
``backward`` to the op; "engine and the rest" is what is left of each step (the
backward walk, gradient sums, Python; with ``--step`` also the loss's bookkeeping and
the Adam update). CPU time, not elapsed time, so that other
processes on the machine disturb it little; the split between ops is the point, not
the total. It also counts the page faults of a step (each is the kernel mapping and
zeroing a page of fresh memory): `MINIBAM_MALLOC=system` shows them without minibam's
allocator setting (minibam/_malloc.py). See docs/performance.md, "Where the time goes".
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MINIBAM_NUM_THREADS"):
    os.environ[_name] = "1"  # before NumPy starts its thread pool

import numpy as np  # noqa: E402

try:
    import minibam  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minibam.function import Function  # noqa: E402
from minibam.modules.bam import random_bam  # noqa: E402
from minibam.tensor import Tensor  # noqa: E402

SPENT: collections.Counter[str] = collections.Counter()


def _timed(name: str, method):
    def timed(*args, **kwargs):
        start = time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            SPENT[name] += time.process_time() - start

    return staticmethod(timed)


def _every_op(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_every_op(sub)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4,256,56,56", help="N,C,H,W (default 4,256,56,56)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--step", action="store_true",
                        help="profile one training step of nn.BAMNet (forward, loss, backward, Adam) "
                             "on a batch of --shape (default 32,1,32,32), as `minibam bench --suite step`")
    args = parser.parse_args()
    if args.step and args.shape == parser.get_default("shape"):
        args.shape = "32,1,32,32"
    shape = tuple(int(v) for v in args.shape.split(","))
    dtype = np.dtype(args.dtype)

    for op in set(_every_op(Function)):
        op.forward = _timed(f"{op.__name__} forward", op.forward)
        op.backward = _timed(f"{op.__name__} backward", op.backward)
    if args.step:
        from minibam.bench.workloads import WORKLOADS

        step = WORKLOADS["step"]({"shape": list(shape), "dtype": dtype.name, "seed": 0}, None)
        what = "A BAMNet training step"
    else:
        bam = random_bam(shape[1], min(16, shape[1]), dtype=dtype)
        rng = np.random.default_rng(0)
        x, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(2))

        def step() -> None:
            bam.zero_grad()
            xt = Tensor(x, requires_grad=True)
            bam(xt).backward(dy)

        what = "BAM forward + backward"

    step()
    step()
    SPENT.clear()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.process_time()
    for _ in range(args.repeat):
        step()
    total = 1e3 * (time.process_time() - start) / args.repeat
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.repeat
    print(f"{what} at {shape} {dtype.name}, one thread: {total:.1f} ms CPU a step, "
          f"{faults:.0f} page faults a step\n")
    print(f"| {'op':<28} | ms | share |\n| --- | --- | --- |")
    for name, seconds in SPENT.most_common():
        ms = 1e3 * seconds / args.repeat
        if ms >= 0.05:
            print(f"| {name:<28} | {ms:.1f} | {100 * ms / total:.0f}% |")
    rest = total - 1e3 * sum(SPENT.values()) / args.repeat
    print(f"| {'engine and the rest':<28} | {rest:.1f} | {100 * rest / total:.0f}% |")


if __name__ == "__main__":
    main()
