"""Page faults per step "as imported" (glibc's default allocator settings), each case in a
fresh process: what minibam's own reuse of its temporaries (minibam/backends/scratch.py)
saves without changing the process.

    python benchmarks/page_faults.py [--tree DIR ...] [--steps 4] [--dtype float32]

For each tree (default: this one) and each case — BAM's dilated convolutions alone
(``minibam bench --suite conv``'s cases), BAM forward + backward at the four benchmark
shapes, one ``nn.BAMNet`` training step — it runs two warm-up steps, then counts the minor
page faults (``getrusage``) of ``--steps`` steps and prints their mean. A fault count is
not a time, but it is what the allocator setting saves, and it barely depends on the
machine's load. With ``--allocator kept`` both get minibam's opt-in setting instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys
spec = json.loads(sys.argv[1])
if spec["allocator"] == "kept":
    from minibam.backends import allocator
    allocator.keep_freed_memory()
from minibam.bench.threads import set_blas_threads
set_blas_threads(1)
from minibam.bench.workloads import WORKLOADS
step = WORKLOADS[spec["workload"]](spec, None)
step(); step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(spec["steps"]):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / spec["steps"])
"""


def cases() -> list[tuple[str, str, list[int]]]:
    sys.path.insert(0, str(ROOT))
    from minibam.bench import BAM_SHAPES, CONV_CASES, STEP_SHAPES

    rows = [("conv", label, list(shape)) for label, shape in CONV_CASES.items()]
    rows += [("bam", "BAM " + ",".join(map(str, s)), list(s)) for s in BAM_SHAPES]
    rows += [("step", "BAMNet step " + ",".join(map(str, s)), list(s)) for s in STEP_SHAPES]
    return rows


def faults(tree: str, workload: str, shape: list[int], args: argparse.Namespace) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = tree
    spec = {"workload": workload, "shape": shape, "dtype": args.dtype, "steps": args.steps,
            "allocator": args.allocator}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", nargs="+", default=[str(ROOT)], help="minibam source trees to compare")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--allocator", default="default", choices=["default", "kept"])
    args = parser.parse_args()
    print(f"minor page faults per step, {args.dtype}, allocator: "
          f"{'glibc defaults (as imported)' if args.allocator == 'default' else 'kept (opt-in)'}")
    width = max(len(label) for _, label, _ in cases())
    print(f"{'case':{width}} " + " ".join(f"{Path(t).name:>12}" for t in args.tree))
    for workload, label, shape in cases():
        counts = [faults(tree, workload, shape, args) for tree in args.tree]
        print(f"{label:{width}} " + " ".join(f"{c:12.0f}" for c in counts))


if __name__ == "__main__":
    main()
