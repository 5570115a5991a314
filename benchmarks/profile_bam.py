"""Where BAM's time goes, in minibam and in PyTorch side by side: CPU time per part, one thread.

    python benchmarks/profile_bam.py [--shape 16,1024,14,14] [--dtype float32] [--repeat 10]
    python benchmarks/profile_bam.py --library minibam --ops   # minibam alone, op by op
    python benchmarks/profile_bam.py --step                    # a BAMNet training step, op by op

Each library runs in a process of its own (this script starts one per library, so that
the minibam process never imports torch), every thread pool at one thread, BAM forward +
backward in training mode on the same weights and inputs. The CPU time of a step is split
into the same parts on both sides:

- the **3x3 convolutions** (BAM's two dilated ones) and the **1x1 convolutions** (forward, dx, dW,
  db), with the GFLOP/s each reaches counting only the useful products (padding zeros
  excluded) against the **peak**: one large square matrix product's GFLOP/s in the same
  process;
- **batch norm** (forward and backward);
- **everything else**: the combination (sigmoid, product), pooling, the MLP, ReLU, and the
  engine (the backward walk, gradient sums, Python or C++ bookkeeping).

minibam's parts come from timing each op's ``forward`` and ``backward`` (the fast twin's
when the fast path runs); PyTorch's from ``torch.profiler`` (the total CPU time of
``aten::conv2d``, ``aten::convolution_backward``, ``aten::batch_norm`` and
``aten::native_batch_norm_backward``). A step's total is timed without any profiling.
CPU time, not elapsed time, so that other processes disturb it little; it is a split of
work, not a race (`minibam bench` is the race). ``--json`` prints the result as JSON for
``benchmarks/tables.py``. See docs/performance.md, "Where the time goes".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MINIBAM_NUM_THREADS"):
    os.environ[_name] = "1"  # before NumPy starts its thread pool

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("3x3 convs", "1x1 convs", "batch norm", "everything else")
SPENT: collections.Counter[str] = collections.Counter()
PRODUCTS: collections.Counter[str] = collections.Counter()  # useful multiply-adds a step


def _conv_part(weight_shape: tuple[int, ...]) -> str:
    return "1x1 convs" if tuple(weight_shape[-2:]) == (1, 1) else "3x3 convs"


def peak_gflops(dtype: np.dtype, size: int = 1536, repeat: int = 5) -> float:
    """GFLOP/s of one large square matrix product: the most this BLAS reaches here."""
    a, b = (np.random.default_rng(k).standard_normal((size, size)).astype(dtype) for k in (1, 2))
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * size**3 / best / 1e9


def _inputs(shape, dtype):
    rng = np.random.default_rng([0, 3])
    return (rng.standard_normal(shape).astype(dtype) for _ in range(2))


def _timed(name, method):
    def timed(ctx, *args, **kwargs):
        part = name
        if name == "Conv2d":  # forward(ctx, x, weight, ...): tell the 1x1 from the 3x3
            part = ctx.profile_part = _conv_part(args[1].shape)
        elif name == "Conv2d backward":
            part = ctx.profile_part
        start = time.process_time()
        try:
            return method(ctx, *args, **kwargs)
        finally:
            SPENT[part] += time.process_time() - start

    return staticmethod(timed)


def _instrument() -> None:
    """Time every op's own forward and backward, the fast twins' included."""
    from minibam.backends import fast
    from minibam.function import Function

    for target in fast._TWINS.values():
        fast._load(target)
    seen, todo = set(), list(Function.__subclasses__())
    while todo:
        op = todo.pop()
        seen.add(op)
        todo += [sub for sub in op.__subclasses__() if sub not in seen]
    for op in seen:
        name = op.__name__.removeprefix("Fast")
        if "forward" in op.__dict__:
            op.forward = _timed(name, op.forward)
        if "backward" in op.__dict__:
            op.backward = _timed(f"{name} backward", op.backward)


def _by_op(step, repeat: int) -> tuple[float, float, dict[str, float]]:
    """A step's CPU ms and page faults timed without instruments, then its ms op by op."""
    for _ in range(2):
        step()
    total, faults = _total(step, repeat)
    _instrument()
    step()
    SPENT.clear()
    for _ in range(repeat):
        step()
    return total, faults, {k: 1e3 * v / repeat for k, v in SPENT.items()}


def profile_minibam(shape, dtype, repeat: int, by_op: bool) -> dict:
    from minibam.modules.bam import random_bam
    from minibam.tensor import Tensor

    bam = random_bam(shape[1], min(16, shape[1]), dtype=dtype)
    x, dy = _inputs(shape, dtype)

    def step() -> None:
        bam.zero_grad()
        bam(Tensor(x, requires_grad=True)).backward(dy)

    total, faults, ops = _by_op(step, repeat)
    parts = collections.Counter()
    for k, v in ops.items():  # Conv2d's time is already under its part's name (`_timed`)
        parts[k if k in PARTS else "batch norm" if k.startswith("BatchNorm") else "everything else"] += v
    return _result("minibam", shape, dtype, total, parts, faults, ops if by_op else None)


def profile_torch(shape, dtype, repeat: int) -> dict:
    import torch

    from minibam import torch_oracle
    from minibam.modules.bam import random_bam

    torch.set_num_threads(1)
    model = torch_oracle.bam_like(random_bam(shape[1], min(16, shape[1]), dtype=dtype))
    x, dy = (torch.from_numpy(a) for a in _inputs(shape, dtype))

    def step() -> None:
        model.zero_grad()
        xt = x.clone().requires_grad_(True)
        model(xt).backward(dy)

    for _ in range(2):
        step()
    total, faults = _total(step, repeat)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeat):
            step()
    parts = collections.Counter()
    for event in prof.key_averages(group_by_input_shape=True):
        ms = event.cpu_time_total / 1e3 / repeat
        if event.key == "aten::conv2d":
            parts[_conv_part(event.input_shapes[1])] += ms
        elif event.key == "aten::convolution_backward":
            parts[_conv_part(event.input_shapes[2])] += ms
        elif event.key in ("aten::batch_norm", "aten::native_batch_norm_backward"):
            parts["batch norm"] += ms
    return _result("torch", shape, dtype, total, parts, faults, None)


def _total(step, repeat: int) -> tuple[float, float]:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.process_time()
    for _ in range(repeat):
        step()
    total = 1e3 * (time.process_time() - start) / repeat
    return total, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeat


def _result(library, shape, dtype, total, parts, faults, ops) -> dict:
    parts["everything else"] = total - sum(v for k, v in parts.items() if k != "everything else")
    return {"library": library, "shape": list(shape), "dtype": np.dtype(dtype).name, "total_ms": total,
            "parts_ms": {k: parts.get(k, 0.0) for k in PARTS}, "page_faults": faults,
            "peak_gflops": peak_gflops(dtype), "ops_ms": ops}


def conv_products(shape) -> dict[str, int]:
    """Useful multiply-adds of forward + dx + dW of BAM's convolutions at ``shape`` (r = 16):
    the two dilated 3x3 ones, C/r -> C/r, and the 1x1 ones, C -> C/r and C/r -> 1."""
    from minibam.bench.report import useful_products  # (N, C, H, W, O, k, dilation)

    n, c, h, w = shape
    mid = c // min(16, c)
    return {"3x3 convs": 2 * useful_products((n, mid, h, w, mid, 3, 4)),
            "1x1 convs": useful_products((n, c, h, w, mid, 1, 1)) + useful_products((n, mid, h, w, 1, 1, 1))}


def side_by_side(shape, dtype: str, repeat: int) -> dict:
    """Both libraries, each in a process of its own; with the GFLOP/s of the convolutions."""
    sides = {}
    for library in ("minibam", "torch"):
        done = subprocess.run([sys.executable, __file__, "--library", library, "--json", "--shape",
                               ",".join(map(str, shape)), "--dtype", dtype, "--repeat", str(repeat)],
                              capture_output=True, text=True, check=True)
        sides[library] = json.loads(done.stdout)
    products = conv_products(shape)
    gflops = {lib: {part: 2 * products[part] / (side["parts_ms"][part] / 1e3) / 1e9
                    for part in products if side["parts_ms"][part] > 0}
              for lib, side in sides.items()}
    return {"shape": list(shape), "dtype": dtype, "sides": sides, "gflops": gflops,
            "products": products, "load": os.getloadavg()[0]}


def markdown(result: dict) -> str:
    mb, th = result["sides"]["minibam"], result["sides"]["torch"]
    lines = ["| part | minibam ms | torch ms | minibam - torch ms | minibam GFLOP/s | torch GFLOP/s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for part in PARTS:
        a, b = mb["parts_ms"][part], th["parts_ms"][part]
        ga, gb = (result["gflops"][lib].get(part) for lib in ("minibam", "torch"))
        flops = (f"{ga:.0f}", f"{gb:.0f}") if ga is not None else ("-", "-")
        lines.append(f"| {part} | {a:.1f} | {b:.1f} | {a - b:+.1f} | {flops[0]} | {flops[1]} |")
    lines.append(f"| **step** | {mb['total_ms']:.1f} | {th['total_ms']:.1f} | {mb['total_ms'] - th['total_ms']:+.1f} "
                 f"| peak {mb['peak_gflops']:.0f} | peak {th['peak_gflops']:.0f} |")
    return "\n".join(lines)


def _ops_table(result: dict) -> str:
    lines = [f"| {'op':<28} | ms | share |", "| --- | --- | --- |"]
    for name, ms in sorted(result["ops_ms"].items(), key=lambda kv: -kv[1]):
        if ms >= 0.05:
            lines.append(f"| {name:<28} | {ms:.1f} | {100 * ms / result['total_ms']:.0f}% |")
    rest = result["total_ms"] - sum(result["ops_ms"].values())
    lines.append(f"| {'engine and the rest':<28} | {rest:.1f} | {100 * rest / result['total_ms']:.0f}% |")
    return "\n".join(lines)


def profile_step(shape, dtype, repeat: int) -> dict:
    from minibam.bench.workloads import WORKLOADS

    step = WORKLOADS["step"]({"shape": list(shape), "dtype": np.dtype(dtype).name, "seed": 0}, None)
    total, faults, ops = _by_op(step, repeat)
    return {"total_ms": total, "page_faults": faults, "ops_ms": ops}


def main() -> None:
    from minibam.cli._common import int_at_least, shape_type

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=shape_type("NCHW"), help="N,C,H,W (default 16,1024,14,14; "
                        "with --step 32,1,32,32)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int_at_least(1), default=10)
    parser.add_argument("--library", choices=["minibam", "torch"], help="profile one library in this process")
    parser.add_argument("--ops", action="store_true", help="with --library minibam: op by op")
    parser.add_argument("--step", action="store_true",
                        help="minibam's BAMNet training step op by op (forward, loss, backward, Adam) on a "
                             "batch of --shape (default 32,1,32,32), as `minibam bench --suite step`")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    shape = args.shape or ((32, 1, 32, 32) if args.step else (16, 1024, 14, 14))
    dtype = np.dtype(args.dtype)
    if args.step:
        result = profile_step(shape, dtype, args.repeat)
        what = "A BAMNet training step"
    elif args.library == "minibam":
        result = profile_minibam(shape, dtype, args.repeat, by_op=True)
        what = "minibam: BAM forward + backward"
    elif args.library == "torch":
        result = profile_torch(shape, dtype, args.repeat)
        what = "PyTorch: BAM forward + backward"
    else:
        result = side_by_side(shape, dtype.name, args.repeat)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"BAM forward + backward at {shape} {dtype.name}, one thread, CPU time per step "
                  f"(load average {result['load']:.1f}):\n\n{markdown(result)}")
        return
    if args.json:
        print(json.dumps(result))
        return
    print(f"{what} at {shape} {dtype.name}, one thread: {result['total_ms']:.1f} ms CPU a step, "
          f"{result['page_faults']:.0f} page faults a step\n")
    if result.get("ops_ms"):
        print(_ops_table(result))
    else:
        print("\n".join(f"| {k} | {v:.1f} |" for k, v in result["parts_ms"].items()))


if __name__ == "__main__":
    main()
