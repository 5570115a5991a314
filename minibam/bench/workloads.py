"""What a benchmark process times: one library, one workload, one shape, one dtype.

Run as ``python -m minibam.bench.workloads '<spec as JSON>'`` by `minibam.bench.harness`,
which starts one such process per measurement so that the two libraries never share a
process (two thread pools in one process slow each other down: see docs/performance.md,
"How it is measured"). The process prints one JSON line:
``{"times": [seconds, ...], "cpu_times": [seconds, ...], "peak_mib": ... or null}``
(wall-clock and CPU time of each timed call).

Workloads:

- ``bam``: BAM forward + backward in training mode on an (N, C, H, W) input;
- ``cbam``: the same for CBAM (pools "avg" and "max", the released default);
- ``conv``: ``conv2d`` forward + backward (dx, dW, db); ``shape`` is (N, C, H, W, O, k, dilation),
  padding = dilation (BAM's spatial gate);
- ``step``: one training step of ``nn.BAMNet`` (forward, cross-entropy, backward, Adam);
  ``shape`` is (N, 1, H, W);
- ``memory``: the ``bam`` step once more after a warm-up, reporting the peak extra resident
  memory of that step (the kernel's high-water mark, reset just before it);
- ``gemm``: one square matrix product ``a @ b`` of size ``shape[0]`` in NumPy: the most
  this machine's BLAS reaches, the peak against which the convolutions' GFLOP/s are read.

minibam's side never imports torch; torch's side builds the same weights with minibam
(NumPy only) and copies them over.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

Step = Callable[[], dict[str, np.ndarray]]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _module_step(module: Any, twin: Callable[[Any], Any], spec: dict[str, Any], torch: Any) -> Step:
    """One forward + backward of ``module`` (a random BAM or CBAM) on seeded x and dy, or
    of its PyTorch twin (``twin(module)``, same weights) when ``torch`` is given."""
    from minibam.tensor import Tensor

    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    rng = np.random.default_rng([spec.get("seed", 0), 3])
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    if torch is None:
        def step() -> dict[str, np.ndarray]:
            module.zero_grad()
            xt = Tensor(x, requires_grad=True)
            y = module(xt)
            y.backward(dy)
            return {"y": y.data, "dx": xt.grad}

        return step
    model = twin(module)
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)

    def torch_step() -> dict[str, np.ndarray]:
        model.zero_grad()
        xt = tx.clone().requires_grad_(True)
        y = model(xt)
        y.backward(tdy)
        return {"y": y.detach().numpy(), "dx": xt.grad.numpy()}

    return torch_step


def _bam_step(spec: dict[str, Any], torch: Any) -> Step:
    from minibam.modules.bam import random_bam

    channels = spec["shape"][1]
    bam = random_bam(channels, min(spec.get("reduction", 16), channels), variant=spec.get("variant", "paper"),
                     seed=spec.get("seed", 0), dtype=np.dtype(spec["dtype"]))
    return _module_step(bam, _twin("bam_like"), spec, torch)


def _cbam_step(spec: dict[str, Any], torch: Any) -> Step:
    from minibam.modules.cbam import random_cbam

    channels = spec["shape"][1]
    cbam = random_cbam(channels, min(spec.get("reduction", 16), channels), seed=spec.get("seed", 0),
                       dtype=np.dtype(spec["dtype"]))
    return _module_step(cbam, _twin("cbam_like"), spec, torch)


def _twin(name: str) -> Callable[[Any], Any]:
    """``minibam.torch_oracle.<name>``, imported only when the torch side runs."""
    def build(module: Any) -> Any:
        from minibam import torch_oracle

        return getattr(torch_oracle, name)(module)

    return build


def _conv_step(spec: dict[str, Any], torch: Any) -> Step:
    dtype = np.dtype(spec["dtype"])
    n, c, h, w, o, k, d = spec["shape"]
    rng = np.random.default_rng(spec.get("seed", 0))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, k, k)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    pad = d * (k - 1) // 2
    dy = rng.standard_normal((n, o, h, w)).astype(dtype)  # "same" padding keeps H, W
    if torch is None:
        from minibam import functional as F
        from minibam.tensor import Tensor

        def step() -> dict[str, np.ndarray]:
            xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, weight, bias))
            y = F.conv2d(xt, wt, bt, padding=pad, dilation=d)
            y.backward(dy)
            return {"y": y.data, "dx": xt.grad, "dw": wt.grad, "db": bt.grad}

        return step
    tx, tw, tb = (torch.from_numpy(a) for a in (x, weight, bias))
    tdy = torch.from_numpy(dy)

    def torch_step() -> dict[str, np.ndarray]:
        xt, wt, bt = (a.clone().requires_grad_(True) for a in (tx, tw, tb))
        y = torch.nn.functional.conv2d(xt, wt, bt, padding=pad, dilation=d)
        y.backward(tdy)
        return {"y": y.detach().numpy(), "dx": xt.grad.numpy(), "dw": wt.grad.numpy(),
                "db": bt.grad.numpy()}

    return torch_step


def _training_step(spec: dict[str, Any], torch: Any) -> Step:
    import minibam as mb
    from minibam import functional as F
    from minibam import nn

    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    mb.manual_seed(spec.get("seed", 0))
    net = nn.BAMNet(in_channels=shape[1], num_classes=10).to(dtype)
    rng = np.random.default_rng([spec.get("seed", 0), 5])
    x = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, 10, shape[0])
    if torch is None:
        optimizer = mb.optim.Adam(net.parameters(), lr=1e-3)

        def step() -> dict[str, np.ndarray]:
            optimizer.zero_grad()
            loss = F.cross_entropy(net(mb.Tensor(x)), labels)
            loss.backward()
            optimizer.step()
            return {"loss": np.asarray(loss.data)}

        return step
    from minibam.torch_oracle import bamnet_like

    model = bamnet_like(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)

    def torch_step() -> dict[str, np.ndarray]:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tx), tlabels)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach().numpy()}

    return torch_step


def _gemm_step(spec: dict[str, Any], torch: Any) -> Step:
    if torch is not None:
        raise ValueError("workloads: the gemm workload runs on the minibam side (NumPy) only")
    size, dtype = int(spec["shape"][0]), np.dtype(spec["dtype"])
    rng = np.random.default_rng(spec.get("seed", 0))
    a, b = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))

    def step() -> dict[str, np.ndarray]:
        return {"ab": a @ b}

    return step


WORKLOADS = {"bam": _bam_step, "cbam": _cbam_step, "conv": _conv_step, "step": _training_step, "memory": _bam_step,
             "gemm": _gemm_step}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the workload of ``spec``, warm it up, time it; the result as a dict.

    ``spec``: workload, library ("minibam" or "torch"), shape, dtype, repeat, warmup,
    threads, and optionally seed, variant, reduction, and dump (a path where the first
    call's arrays are saved, for the parent to compare the two libraries).
    """
    threads = int(spec["threads"])
    torch = None
    if spec["library"] == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        from minibam.bench.threads import set_blas_threads

        set_blas_threads(threads)
    step = WORKLOADS[spec["workload"]](spec, torch)
    first = step()
    if spec.get("dump"):
        np.savez(spec["dump"], **{k: np.asarray(v) for k, v in first.items()})
    for _ in range(int(spec.get("warmup", 1)) - 1):
        step()
    if spec["workload"] == "memory":
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident size
        before = _status_kib("VmRSS")
        step()
        return {"times": [], "peak_mib": (_status_kib("VmHWM") - before) / 1024}
    times, cpu_times = [], []
    for _ in range(int(spec["repeat"])):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {"times": times, "cpu_times": cpu_times, "peak_mib": None}


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (thread pools): it is not part of any measurement
