"""minibam.backends.allocator: opt-in, what it saves, what it costs, who it leaves alone.

Tested by page faults and resident memory, not time. Each case runs in a fresh
interpreter, since the allocator's settings are per process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
ROOT = Path(__file__).resolve().parents[1]

# Like a training step: six 24 MiB arrays alive at once, then all freed; ten rounds.
# Count the page faults of the last nine.
STEPS = """
import json, resource
import minibam
from minibam.backends import allocator
import numpy as np
applied = allocator.keep_freed_memory() if {opt_in} else False
def step():
    alive = [np.ones(3 << 20) for _ in range(6)]
    del alive
step()  # the first one faults
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({{"applied": applied, "tuned": allocator.is_tuned(), "faults": faults,
                  "said": allocator.describe()}}))
"""

PAGES_PER_ARRAY = (24 << 20) // 4096  # 6144 pages of 4 KiB; fewer if the kernel uses huge pages


def _run(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("MINIBAM_MALLOC", "GLIBC_TUNABLES")}
    # NumPy asks for huge pages on arrays of 4 MiB or more; without them each 4 KiB page
    # is a fault of its own, which makes the count below easy to read.
    clean["NUMPY_MADVISE_HUGEPAGE"] = "0"
    clean["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_import_alone_changes_nothing():
    result = _run(STEPS.format(opt_in=False))
    assert result["tuned"] is False and result["said"] == "allocator: the system's defaults"
    assert result["faults"] > 5 * PAGES_PER_ARRAY, result  # glibc's defaults: every step faults


def test_opted_in_freed_arrays_are_reused_without_page_faults():
    result = _run(STEPS.format(opt_in=True))
    assert result["applied"] is True and result["tuned"] is True
    assert "freed memory kept" in result["said"]  # what `minibam bench` prints
    assert result["faults"] < PAGES_PER_ARRAY // 2, result


@pytest.mark.parametrize("env", [{"MINIBAM_MALLOC": "system"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "65536"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"MALLOC_TOP_PAD_": "0"}, {"MALLOC_PERTURB_": "0"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_users_own_malloc_settings_win(env):
    result = _run(STEPS.format(opt_in=True), **env)
    assert result["applied"] is False and result["tuned"] is False
    if "MINIBAM_MALLOC" not in env:
        assert "from the environment" in result["said"]


# The cost the documentation states: a fragmented heap. Forty 20 MiB arrays, each
# followed by a small array that is kept; then the big ones are freed. With freed memory
# kept, glibc cannot return the holes below the small arrays; with its defaults each big
# array was a mapping of its own, returned at once.
FRAGMENTS = """
import json, resource
import numpy as np
from minibam.backends import allocator
if {opt_in}:
    assert allocator.keep_freed_memory()
def resident_mib():
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
base = resident_mib()
big, small = [], []
for _ in range(40):
    big.append(np.ones(20 << 17))  # 20 MiB
    small.append(np.ones(40_000))  # 312 KiB: from the heap's top when memory is kept
del big
print(json.dumps({{"resident_mib": resident_mib() - base}}))
"""


def test_the_cost_freed_memory_stays_resident_in_a_fragmented_heap():
    """What docs/performance.md and the module's docstring say it costs, measured: with the
    setting, hundreds of MiB stay resident though only kilobytes are in use; without it,
    almost nothing does (benchmarks/allocator_cost.py prints both)."""
    kept = _run(FRAGMENTS.format(opt_in=True))["resident_mib"]
    default = _run(FRAGMENTS.format(opt_in=False))["resident_mib"]
    assert kept > 300 and default < 50, (kept, default)
