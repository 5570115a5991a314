"""Measure every performance table of the docs, keep the record, and write the pages from it.

    python benchmarks/tables.py --write            # everything, then the pages
    python benchmarks/tables.py --write --only bam step   # measure these again, keep the rest
    python benchmarks/tables.py --pages            # rewrite the pages from the record alone

What it runs, each library in its own processes through `minibam.bench.measure` (the
harness of ``minibam bench``):

- ``bam``: BAM forward + backward at the four shapes, both dtypes, with the allocator kept
  on both sides; again with glibc's defaults on both sides ("as imported": minibam
  without its opt-in allocator setting); and minibam's plain path (``MINIBAM_FAST=0``);
- ``cbam``: the same for CBAM, allocator kept;
- ``conv``: BAM's convolutions alone, and ``gemm``: NumPy's large square matrix product,
  the peak against which their GFLOP/s are read;
- ``step``: a BAMNet training step, allocator kept and as imported;
- ``memory``: peak extra resident memory of a BAM step;
- ``profile``: ``benchmarks/profile_bam.py``'s split of a BAM step into parts, minibam
  beside PyTorch, one thread, CPU time, at the four shapes and both dtypes.

The record goes to ``benchmarks/results.json``; with ``--write`` (or ``--pages``) every
``<!-- bench:NAME -->`` region of docs/performance.md and docs/cbam.md is rendered from it
(`minibam.bench.report`). tests/test_bench_record.py checks the pages against the record.
Run it on a machine with nothing else running.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from minibam import bench  # noqa: E402
from minibam._atomic import atomic_write  # noqa: E402
from minibam.bench import report  # noqa: E402
from minibam.cli._common import int_at_least  # noqa: E402

RECORD = ROOT / "benchmarks" / "results.json"
PAGES = [ROOT / "docs" / "performance.md", ROOT / "docs" / "cbam.md"]
PARTS = ("bam", "cbam", "conv", "step", "memory", "profile")
GEMM_SIZE = 1536


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        return f"{model}, {os.cpu_count()} cores, {kib / 2**20:.0f} GiB ({platform.system()})"
    except OSError:
        return f"{model}, {os.cpu_count()} cores"


def _torch_version() -> str:
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "not installed"


def _run(suite: str, setting: str, sides: list, args, dtypes=("float32", "float64")) -> list[dict]:
    rows = []
    for case in bench.cases(suite, dtypes):
        print(f"  {suite} ({setting}) {case.label} {case.dtype}", file=sys.stderr, flush=True)
        m = bench.measure(case.workload, case.shape, case.dtype, sides,
                          processes=1 if suite == "memory" else args.processes, repeat=args.repeat,
                          threads=args.threads, allocator="default" if setting == "default" else "kept",
                          seed=0, variant="paper", reduction=16)
        rows.append(report.to_dict(case.label, m))
    return rows


def _gemm(args) -> list[dict]:
    rows = []
    for dtype in ("float32", "float64"):
        m = bench.measure("gemm", (GEMM_SIZE,), dtype, [bench.Side("numpy", "minibam")], processes=args.processes,
                          repeat=args.repeat, threads=args.threads, compare=False)
        rows.append(report.to_dict(f"{GEMM_SIZE}^3", m))
    return rows


def _profile() -> list[dict]:
    """profile_bam.py's split, both sides with the allocator kept (as the main tables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(bench.allocator_environment("kept", "bam"))
    results = []
    for shape in bench.BAM_SHAPES:
        for dtype in ("float32", "float64"):
            print(f"  profile {shape} {dtype}", file=sys.stderr, flush=True)
            done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_bam.py"), "--json",
                                   "--shape", ",".join(map(str, shape)), "--dtype", dtype],
                                  capture_output=True, text=True, check=True, env=env)
            results.append(json.loads(done.stdout))
    return results


def measure(args, record: dict) -> dict:
    minibam, torch = bench.Side("minibam", "minibam"), bench.Side("torch", "torch")
    plain = bench.Side("minibam (plain)", "minibam", env=(("MINIBAM_FAST", "0"),))
    runs, when = record.setdefault("runs", {}), record.setdefault("when", {})
    for part in args.only:
        print(f"measuring {part}", file=sys.stderr, flush=True)
        load_start = os.getloadavg()[0]
        if part == "profile":
            record["profile"] = _profile()
        elif part == "memory":
            runs["memory"] = {"memory": _run("memory", "memory", [minibam, torch], args)}
        else:
            settings = {"bam": ("kept", "default", "plain"), "cbam": ("kept",), "conv": ("kept",),
                        "step": ("kept", "default")}[part]
            runs[part] = {s: _run(part, s, [plain if s == "plain" else minibam, torch], args) for s in settings}
            if part == "conv":
                runs["gemm"] = {"kept": _gemm(args)}
        when[part] = {"date": datetime.date.today().isoformat(), "load_start": load_start,
                      "load_end": os.getloadavg()[0]}
    record["meta"] = {
        "command": "python benchmarks/tables.py " + " ".join(sys.argv[1:]),
        "machine": _machine(), "cores": os.cpu_count(), "numpy": np.__version__, "blas": bench.blas_description(),
        "torch": _torch_version(), "threads": args.threads, "processes": args.processes, "repeat": args.repeat,
        "warmup": 2, "allocators": {"kept": bench.allocator_environment("kept", "bam"), "default": {}},
    }
    return record


def write_pages(record: dict, pages=PAGES) -> None:
    for page in pages:
        text = page.read_text(encoding="utf-8")
        filled = report.fill(text, record)
        if filled != text:
            with atomic_write(page, "tables") as handle:
                handle.write(filled.encode("utf-8"))
            print(f"wrote {page.relative_to(ROOT)}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="measure only these")
    parser.add_argument("--write", action="store_true", help="save the record and rewrite the pages")
    parser.add_argument("--pages", action="store_true", help="only rewrite the pages from the saved record")
    parser.add_argument("--processes", type=int_at_least(1), default=3)
    parser.add_argument("--repeat", type=int_at_least(1), default=7)
    parser.add_argument("--threads", type=int_at_least(1), default=2)
    args = parser.parse_args()
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if not args.pages:
        bench.set_blas_threads(args.threads)
        record = measure(args, record)
        if args.write:
            with atomic_write(RECORD, "tables") as handle:
                handle.write((json.dumps(record, indent=1) + "\n").encode("utf-8"))
        else:
            print(json.dumps(record))
    if args.write or args.pages:
        write_pages(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
