"""Fair timing: each library alone in its own process, the sides alternating, repeated.

Why not time both libraries in one process? Each brings a thread pool (NumPy's OpenBLAS,
PyTorch's OpenMP), and in one process those pools compete for the same cores: measured
at (4, 256, 56, 56) float32, PyTorch took 112 ms beside NumPy's threads and 24-38 ms
alone. So every measurement here is a fresh process running one library
(`minibam.bench.workloads`), and the two sides take turns:

    round 0: A B    round 1: B A    round 2: A B    ...

Each process warms up, then times ``repeat`` calls and reports their median. A side's
time is the median over its processes; the *ratio* is the median over rounds of
(A's median / B's median) in that round, since the two processes of one round ran next
to each other and saw about the same machine load. The spread of those per-round
ratios, (max - min) / median, says how far the ratio can be trusted: above
``SPREAD_LIMIT`` the result is flagged. See docs/performance.md, "How it is measured".
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minibam.backends import allocator as allocator_settings
from minibam.checks.compare import relative_error

SPREAD_LIMIT = 0.2  # per-round ratios further apart than 20 % of their median: do not trust
ROOT = str(Path(__file__).resolve().parents[2])  # the tree this minibam was imported from


@dataclass(frozen=True)
class Side:
    """One contestant: a library, and for minibam the source tree to import it from."""

    label: str
    library: str  # "minibam" or "torch"
    root: str = ROOT
    env: tuple[tuple[str, str], ...] = ()  # extra environment, e.g. (("MINIBAM_FAST", "0"),)


@dataclass
class Measurement:
    """Per-process results of one case: medians in seconds (or peak MiB for ``memory``)."""

    workload: str
    shape: tuple[int, ...]
    dtype: str
    sides: tuple[Side, ...]
    values: dict[str, list[float]] = field(default_factory=dict)  # label -> one per process
    ratios: list[float] = field(default_factory=list)  # first side / second side, per round
    max_rel_diff: float | None = None  # of the two sides' results, when compared

    def center(self, label: str) -> float:
        return statistics.median(self.values[label])

    def spread(self, label: str) -> float:
        """(max - min) / median of one side's per-process values."""
        v = self.values[label]
        return (max(v) - min(v)) / statistics.median(v) if statistics.median(v) else 0.0

    def ratio_of_centers(self) -> float | None:
        """First side's median over the second's (for ``memory``, measured once a side)."""
        a, b = (self.center(s.label) for s in self.sides[:2])
        return a / b if b else None

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def ratio_spread(self) -> float | None:
        if not self.ratios or not statistics.median(self.ratios):
            return None
        return (max(self.ratios) - min(self.ratios)) / statistics.median(self.ratios)

    @property
    def min_ratio(self) -> float:
        return min(self.ratios)

    @property
    def max_ratio(self) -> float:
        return max(self.ratios)

    @property
    def trusted(self) -> bool:
        spread = self.ratio_spread
        return spread is None or spread <= SPREAD_LIMIT


ALLOCATORS = ("kept", "default")


def allocator_environment(allocator: str, workload: str) -> dict[str, str]:
    """The glibc settings every side's process starts with: the same on both sides.

    "kept": the settings of ``minibam.backends.allocator.keep_freed_memory``, given to
    *both* libraries through glibc's environment variables; "default": glibc's defaults.
    The memory workload always maps every large array on its own (MALLOC_MMAP_THRESHOLD_
    = 65536), so that resident memory follows the live arrays for both libraries alike.
    """
    if workload == "memory":
        return {"MALLOC_MMAP_THRESHOLD_": "65536"}
    if allocator not in ALLOCATORS:
        raise ValueError(f"bench: allocator must be one of {ALLOCATORS}, got {allocator!r}")
    return dict(allocator_settings.ENVIRONMENT) if allocator == "kept" else {}


def _child_env(side: Side, threads: int, workload: str, allocator: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (side.root, env.get("PYTHONPATH")) if p)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINIBAM_NUM_THREADS"):
        env[name] = str(threads)
    env.update(allocator_environment(allocator, workload))
    env.update(dict(side.env))
    return env


def run_process(side: Side, spec: dict[str, Any], threads: int, timeout: float = 900,
                allocator: str = "kept") -> dict[str, Any]:
    """One benchmark process for ``side``; its JSON result."""
    spec = {**spec, "library": side.library, "threads": threads}
    done = subprocess.run(
        [sys.executable, "-m", "minibam.bench.workloads", json.dumps(spec)],
        capture_output=True, text=True, env=_child_env(side, threads, spec["workload"], allocator),
        timeout=timeout, cwd=side.root,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"benchmark process for {side.label} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(workload: str, shape: Sequence[int], dtype: str, sides: Sequence[Side], processes: int = 3,
            repeat: int = 7, warmup: int = 2, threads: int = 2, compare: bool = True, clock: str = "wall",
            progress: Callable[[str], None] | None = None, allocator: str = "kept",
            **options: Any) -> Measurement:
    """Time ``workload`` at ``shape`` and ``dtype`` on each side in ``processes`` rounds.

    ``clock`` "wall" times elapsed time; "cpu" the process's CPU time (all its threads),
    which a busy machine disturbs far less: fit for A/B tests of single-threaded code.
    ``options`` (seed, variant, reduction) go to every process unchanged. With
    ``compare``, the first round saves each side's results and the largest relative
    difference between the first two sides is recorded. ``allocator`` (see
    `allocator_environment`) is the same for every side.
    """
    sides = tuple(sides)
    result = Measurement(workload, tuple(shape), dtype, sides, {s.label: [] for s in sides})
    spec = {"workload": workload, "shape": list(shape), "dtype": dtype, "repeat": repeat,
            "warmup": warmup, **options}
    with tempfile.TemporaryDirectory(prefix="minibam-bench-") as tmp:
        dumps = [str(Path(tmp) / f"side{i}.npz") for i in range(len(sides))]
        for round_ in range(processes):
            order = list(range(len(sides)))
            if round_ % 2:
                order.reverse()  # A B, then B A: neither side always runs first
            this_round: dict[int, float] = {}
            for i in order:
                dump = dumps[i] if compare and round_ == 0 and workload != "memory" else None
                if progress:
                    progress(f"{workload} {shape} {dtype}: {sides[i].label}, round {round_ + 1}/{processes}")
                out = run_process(sides[i], {**spec, "dump": dump}, threads, allocator=allocator)
                value = out["peak_mib"] if workload == "memory" else statistics.median(out["cpu_times" if clock == "cpu" else "times"])
                result.values[sides[i].label].append(value)
                this_round[i] = value
            if len(sides) >= 2 and this_round[1] > 0 and this_round[0] > 0:
                result.ratios.append(this_round[0] / this_round[1])
        if compare and len(sides) >= 2 and workload != "memory":
            with np.load(dumps[0]) as a, np.load(dumps[1]) as b:
                result.max_rel_diff = max(relative_error(a[k], b[k]) for k in a.files)
    return result
