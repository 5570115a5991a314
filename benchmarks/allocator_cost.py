"""What minibam.backends.allocator.keep_freed_memory saves and costs, measured.

    python benchmarks/allocator_cost.py

Prints, for glibc's defaults and for the opt-in setting, each in a fresh process:
the page faults of nine training-step-like rounds (six 24 MiB arrays alive, then freed),
and the resident memory left after a fragmenting pattern (forty 20 MiB arrays, each
followed by a small array that is kept, then the big ones freed). The same programs are
held to their direction by tests/test_allocator.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_allocator import FRAGMENTS, STEPS  # noqa: E402


def run(code: str) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MINIBAM_MALLOC"}
    env.update(NUMPY_MADVISE_HUGEPAGE="0", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    print("| allocator | page faults, 9 steps | resident MiB after freeing (fragmented) |")
    print("| --- | --- | --- |")
    for label, opt_in in (("glibc's defaults (import minibam alone)", False),
                          ("keep_freed_memory()", True)):
        faults = run(STEPS.format(opt_in=opt_in))["faults"]
        resident = run(FRAGMENTS.format(opt_in=opt_in))["resident_mib"]
        print(f"| {label} | {faults} | {resident:.0f} |")


if __name__ == "__main__":
    main()
