"""How long ``verify.bam`` takes on a C=64 module with the default shapes.

    python docs/examples/time_verify.py

The first call includes importing PyTorch; the others are what a test or a CI job pays
per module. Each of the three modules of ``my_bams.py`` is timed three times.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from minibam import verify  # noqa: E402

start = time.perf_counter()
from my_bams import BuggyBAM, MyBAM, ReleasedBAM  # noqa: E402  (imports torch)

print(f"import torch and the example modules: {time.perf_counter() - start:.2f} s")
for make in (MyBAM, ReleasedBAM, BuggyBAM):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        report = verify.bam(make(64))
        times.append(time.perf_counter() - start)
    print(f"verify.bam({make.__name__}(64)): {', '.join(f'{t:.2f}' for t in times)} s; "
          f"{'PASS ' + str(report.variant) if report.passed else 'FAIL, closest ' + str(report.closest)}, "
          f"{len(report.rows)} arrays, {len(report.candidates)} variant(s) tried")
