"""minibam keeps freed memory for reuse (minibam/_malloc.py): tested by page faults, not time.

Each case runs in a fresh interpreter, since the allocator's settings are per process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# Like a training step: six 24 MiB arrays alive at once, then all freed; ten rounds.
# Count the page faults of the last nine.
PROBE = """
import json, resource
import minibam, minibam._malloc as m
import numpy as np
def step():
    alive = [np.ones(3 << 20) for _ in range(6)]
    del alive
step()  # the first one faults
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": m.TUNED, "faults": faults, "said": m.describe()}))
"""

PAGES_PER_ARRAY = (24 << 20) // 4096  # 6144 pages of 4 KiB; fewer if the kernel uses huge pages


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("MINIBAM_MALLOC", "GLIBC_TUNABLES")}
    # NumPy asks for huge pages on arrays of 4 MiB or more; without them each 4 KiB page
    # is a fault of its own, which makes the count below easy to read.
    clean["NUMPY_MADVISE_HUGEPAGE"] = "0"
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_freed_arrays_are_reused_without_page_faults():
    result = _probe()
    assert result["tuned"] is True
    assert "keeps freed memory" in result["said"]  # what `minibam bench` prints
    # Nine rounds of six arrays of 6144 pages each: with the memory kept, next to no faults.
    assert result["faults"] < PAGES_PER_ARRAY // 2, result


def test_without_the_setting_every_array_faults_again():
    """The control: the probe can tell the two apart (so the test above can fail)."""
    result = _probe(MINIBAM_MALLOC="system")
    assert result["tuned"] is False
    assert result["faults"] > 5 * PAGES_PER_ARRAY, result


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_users_own_malloc_settings_win(env):
    result = _probe(**env)
    assert result["tuned"] is False and "from the environment" in result["said"]
